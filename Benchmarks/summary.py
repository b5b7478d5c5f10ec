"""What the benchmark scripts' summaries share: each run's result (the last line of a JSON
file `martlet bench` wrote) and the median of a field over the runs."""
import json
import statistics


def load_runs(path_of_run, runs):
    """The results of runs 1...runs; `path_of_run(run)` names each file. Missing or
    unreadable files (a run that failed) are left out."""
    results = []
    for run in range(1, runs + 1):
        try:
            with open(path_of_run(run)) as f:
                results.append(json.loads(f.read().strip().splitlines()[-1]))
        except Exception:
            pass
    return results


def med(results, field):
    """The median of `field` over the results that have it; None if none has."""
    vals = [r[field] for r in results if r.get(field) is not None]
    return statistics.median(vals) if vals else None
