"""Reports of a run folder: the gap study (does the modality gap predict retrieval?) and one
self-contained HTML page. Both import matplotlib and the runner: import on demand."""

from xmodal.report.gap import GapStudy, gap_study, run_gap_study, write_gap_study
from xmodal.report.html import write_report

__all__ = ["GapStudy", "gap_study", "run_gap_study", "write_gap_study", "write_report"]
