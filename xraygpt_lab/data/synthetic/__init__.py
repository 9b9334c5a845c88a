"""The synthetic chest-radiograph world: anatomy, findings, reports and export to disk."""
