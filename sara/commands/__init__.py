"""The `sara` command groups, one module each (`sara data …`, `sara stage2 …`); they sit above
every package they run, so no package imports its own command line."""
