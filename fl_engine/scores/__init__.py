"""Conventional prognostic scores as pure functions over DataFrames (one row per patient) or
one-patient dicts, using the column names of ``fedhaem_kernel.schema``. Missing inputs are NaN and
are never read as 0: outputs are NaN with a reason, or best/mean/worst for IPSS-M.
"""
from .aml import ELN2022_CATEGORIES, eln2022
from .cmml import CPSS_CATEGORIES, cpss, cpss_mol
from .mds import (IPSSM_CATEGORIES, IPSSM_TERMS, IPSSR_CATEGORIES, from_ipssm_reference, ipssm,
                  ipssr, ipssra)
from .myeloma import iss, riss

__all__ = [
    "CPSS_CATEGORIES", "ELN2022_CATEGORIES", "IPSSM_CATEGORIES", "IPSSM_TERMS",
    "IPSSR_CATEGORIES", "cpss", "cpss_mol", "eln2022", "from_ipssm_reference", "ipssm", "ipssr",
    "ipssra", "iss", "riss",
]
