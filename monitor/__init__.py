"""trial-monitor: watch ClinicalTrials.gov records and keep every field-level change."""

__version__ = "0.1.0"
