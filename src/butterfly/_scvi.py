"""Adapter to scvi-tools for scButterfly-C's paper backend: MultiVI (RNA+ATAC) or totalVI (RNA+ADT) latents.

scvi-tools is an optional extra (``pip install butterfly-omics[scvi]``); nothing else in butterfly imports it.
"""

from __future__ import annotations

from ._validation import ButterflyInputError


def require_scvi():
    """Import scvi-tools or explain how to install it."""
    try:
        import scvi
    except ImportError as error:
        raise ButterflyInputError(
            "cluster_backend='scvi' needs scvi-tools, which is not installed. Install it with "
            "`pip install butterfly-omics[scvi]`, or use cluster_backend='builtin'."
        ) from error
    return scvi
