"""The captioned figures of each job, drawn from its result and records: the CLI saves them, the Python API's
results show them in Jupyter (`deepprobe.display`). One module per job; they import only `deepprobe.render`
(`render_sam_depth` too) and PIL/matplotlib, so technique modules can call them without import loops."""
