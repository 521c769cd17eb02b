"""The client side: the LMDB embedding cache and the budgeted query job."""
