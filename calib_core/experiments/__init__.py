"""Many runs at once: sweep grids (locally or on Ray), their statistics, equivalence inference and figures,
single-run figures, the demo and the Start page's presets. The studies built on them live in studies/."""
