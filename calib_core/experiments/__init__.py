"""Many runs at once: sweep grids (locally or on Ray), their statistics and figures, and the paper's
reproduction with its report."""
