"""The workflow's stages, one module per rule, each with a typed ``run(...)`` that is
the whole stage: :mod:`.prepare`, :mod:`.train`, :mod:`.saliency`, :mod:`.metrics`,
:mod:`.sanity`, :mod:`.summarize`, :mod:`.plot`. The command line
(:mod:`cambench.cli`) only parses arguments and calls them; the code digests that
drive reruns (:mod:`cambench.provenance`) start from them."""
