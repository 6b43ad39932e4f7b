"""DARTS-family search (Liu et al., 2019), A-DARTS (Wang et al., 2021) and PC-DARTS (Xu et al., 2020).

``space`` (search spaces and activation modes), ``genotypes`` (cells as JSON, the published ones),
``candidates`` (what competes on an edge), ``mixture`` (the β-mixture of Eq. 2), ``supernet`` (the search
network with α, β, γ), ``trilevel`` (Algorithm 1), ``derive`` (genotype derivation), ``model`` (discrete
networks), ``search`` (one run), ``objective`` (one run as an Optuna trial), ``draw`` (cell drawings).
"""
