"""Build time and peak memory of SANS / RW-SANS neighbourhoods, on a real dataset or a random graph.

    python bench/neighbourhoods.py --dataset fb15k237 --builds rw:3:1000:restart rw:3:1000:chained
    python bench/neighbourhoods.py --random 123182 1079040 37 --builds rw:3:1000:restart rw:3:1000:chained

A build is ``rw:K:OMEGA:MODE`` (random walks) or ``khop:K:MODE`` (sparse products). ``--random E T R`` is
a graph of E entities and T triples over R relations with uniformly random heads and tails (YAGO3-10:
123,182 entities, 1,079,040 training triples, 37 relations); ``--zipf S`` draws entities by a Zipf law of
exponent S instead, for hubs like those of real graphs. Each build runs in a fresh subprocess (so its peak
RSS is its own), without the on-disk cache, ``--repeats`` times; the median is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from kgexp.data.neighbourhoods import k_hop, random_walks


def random_graph(num_entities: int, num_triples: int, num_relations: int, zipf: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if zipf > 0:
        weights = torch.arange(1, num_entities + 1, dtype=torch.float64) ** -zipf
        ends = torch.multinomial(weights, 2 * num_triples, replacement=True, generator=generator)
        heads, tails = ends[:num_triples], ends[num_triples:]
    else:
        heads = torch.randint(num_entities, (num_triples,), generator=generator)
        tails = torch.randint(num_entities, (num_triples,), generator=generator)
    relations = torch.randint(num_relations, (num_triples,), generator=generator)
    return torch.stack([heads, relations, tails], 1)


def load_train(args: argparse.Namespace) -> tuple[torch.Tensor, int]:
    if args.random:
        num_entities, num_triples, num_relations = args.random
        return random_graph(num_entities, num_triples, num_relations, args.zipf), num_entities
    from kgexp.data.graph import load_graph

    graph = load_graph(args.dataset, args.path)
    return graph.train, graph.num_entities


def build_once(args: argparse.Namespace) -> dict:
    train, num_entities = load_train(args)
    kind, *fields = args.one.split(":")
    started = time.perf_counter()
    if kind == "rw":
        hops, walks, mode = int(fields[0]), int(fields[1]), fields[2]
        neighbourhood = random_walks(train, num_entities, hops, walks, mode, seed=0)
    else:
        neighbourhood = k_hop(train, num_entities, int(fields[0]), fields[1])
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "pairs": len(neighbourhood.indices), "peak_rss_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="fb15k237")
    parser.add_argument("--path", help="a folder of split files instead of the registered dataset")
    parser.add_argument("--random", type=int, nargs=3, metavar=("ENTITIES", "TRIPLES", "RELATIONS"))
    parser.add_argument("--zipf", type=float, default=0.0)
    parser.add_argument("--builds", nargs="+", default=["rw:3:1000:restart", "rw:3:1000:chained"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(build_once(args)))
        return
    forwarded = [a for a in sys.argv[1:] if a not in args.builds and a != "--builds"]
    for build in args.builds:
        results = []
        for _ in range(args.repeats):
            command = [sys.executable, __file__, *forwarded, "--one", build]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
        seconds = statistics.median(r["seconds"] for r in results)
        peak = max(r["peak_rss_mib"] for r in results)
        pairs = results[0]["pairs"]
        print(
            f"{build:24s} median {seconds:7.1f} s  pairs {pairs:>12,}  peak RSS {peak:7.0f} MiB", flush=True
        )


if __name__ == "__main__":
    main()
