"""`tandem batch`: OpenAI Batch JSONL files run against a deadline, exactly once, resumable.

  lines.py     the input file: valid requests, and the bad lines with their reasons
  journal.py   the output file: append + fsync per result, resume, whose input it is
  adapter.py   one Batch request -> the HTTP API's validation and generation -> its answer
  estimate.py  the job's size and the start-up estimate against the deadline
  pacer.py     the job's deadline -> requests in flight, each one's SLO and mode, from
               its measured progress
  replicas.py  where it runs: its own replicas from a config, or a running Serve app
  progress.py  the tqdm bar and the summary
  runner.py    the job loop; job.py one run of the command; cmd.py the command line
"""
