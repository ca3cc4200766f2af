"""PACS integration (issue #19): DICOM in from a PACS (C-STORE, STOW-RS, pull by
query), study grouping and routing, and results back as DICOM (Structured Report and
Secondary Capture) to the peer that sent the study."""
