"""Report text: XrayGPT's summary rules, the CheXpert-style labeler, OpenI reports, instructions."""
