"""Settings and process-level plumbing shared by the web app, the workers and the CLI."""

DISCLAIMER = (
    "ScanQ is research software, not a diagnostic device. Its scores must not be used "
    "for the diagnosis or care of any patient."
)
