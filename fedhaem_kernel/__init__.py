"""FedHaem's shared kernel: the per-use-case data schema and the survival metrics (C-index, Brier,
Kaplan-Meier) that etl, generative and fl_engine all need. It sits below every other package and
imports none of them: plain Python over numpy and scipy (no torch, no pandas, no web stack)."""
