"""Running a job: launching its processes, checkpoints, run records and atomic writes."""
