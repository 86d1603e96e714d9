"""`make bench-pg-lineage`: how should the PostgreSQL metadata store (issue 14) keep lineage?

Builds one tree the size of the full scale benchmark's — 100 bases, 101,000 students, base1's
family 10,900 deep and wide, one chain 1,000 deep under base0 — in a throwaway PostgreSQL
cluster (Debian's initdb/pg_ctl as the postgres user, a free loopback port, removed at the end,
also on failure), three ways side by side:

1. a materialised path as text (`/1/57/203/`, B-tree), as the SQLite store keeps it since
   migration 0004: the script checks whether PostgreSQL can index it at all (a B-tree entry must
   fit in a third of a page, and the chain's paths are longer);
2. the path as an array of ids (`{1,57,203}`, `bigint[]`, GIN): a subtree is every row whose
   array contains the root's id (one GIN key), ancestors are the array's ids;
3. `ltree` (`1.57.203`, GiST): `<@` for a subtree, `@>` for ancestors;
4. a recursive CTE over `parent_id` (B-tree on parent_id): nothing stored but the edge.

and times the lineage reads Graft makes (median of RUNS, server-side `Execution Time` of
EXPLAIN ANALYZE), plus what each costs to store. Prints Markdown.
"""

import argparse
import os
import random
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from pg_cluster import throwaway_cluster  # noqa: E402


def tree(bases, students, big_family, chain):
    """(id, parent) rows in insertion order: parents before children."""
    rng = random.Random(1)
    parent = {}
    families = [[b] for b in range(1, bases + 1)]
    next_id = bases + 1
    for s in range(students):
        family = 1 if s < big_family else s % bases
        members = families[family]
        parent[next_id] = rng.choice(members)
        members.append(next_id)
        next_id += 1
    deepest = 1  # base0 is id 1
    chain_ids = []
    for _ in range(chain):
        parent[next_id] = deepest
        deepest = next_id
        chain_ids.append(next_id)
        next_id += 1
    return parent, deepest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", type=int, default=100)
    parser.add_argument("--students", type=int, default=100000)
    parser.add_argument("--big-family", type=int, default=10000)
    parser.add_argument("--chain", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with throwaway_cluster() as cluster:
        work, psql = cluster.work, cluster.psql
        parent, deepest = tree(args.bases, args.students, args.big_family, args.chain)
        paths = {b: f"/{b}/" for b in range(1, args.bases + 1)}
        for node in sorted(parent):
            paths[node] = paths[parent[node]] + f"{node}/"
        rows = os.path.join(work, "rows.csv")
        with open(rows, "w") as out:
            for node in sorted(paths):
                ids = paths[node].strip("/").split("/")
                out.write(f"{node},{parent.get(node, '')},{paths[node]},\"{{{','.join(ids)}}}\",{'.'.join(ids)}\n")
        os.chmod(work, 0o755)
        os.chmod(rows, 0o644)
        psql("CREATE EXTENSION ltree")
        psql("""CREATE TABLE models (id bigint PRIMARY KEY, parent_id bigint, path text COLLATE "C" NOT NULL, ids bigint[] NOT NULL, lpath ltree NOT NULL)""")
        psql(f"COPY models FROM '{rows}' WITH (FORMAT csv)")
        longest = int(psql("SELECT max(octet_length(path)) FROM models"))
        try:
            psql("CREATE INDEX models_path ON models (path)")
            text_path = "indexed"
        except RuntimeError as error:
            text_path = str(error).splitlines()[0]
        psql("CREATE INDEX models_ids ON models USING gin (ids)")
        try:
            psql("CREATE INDEX models_lpath ON models USING gist (lpath)")
            ltree_index = "indexed"
        except RuntimeError as error:
            ltree_index = str(error).splitlines()[0]
        psql("CREATE INDEX models_parent ON models (parent_id)")
        psql("VACUUM ANALYZE models")
        sizes = {name: int(psql(f"SELECT pg_relation_size('{name}')")) for name in ["models_ids", "models_parent"]}

        def descendants(root):
            return {
                "id array": f"SELECT count(*) FROM models WHERE ids @> ARRAY[{root}::bigint]",
                "recursive CTE": f"WITH RECURSIVE down(id) AS (SELECT {root}::bigint UNION ALL SELECT m.id FROM models m JOIN down ON m.parent_id = down.id) SELECT count(*) FROM down",
            }

        def ancestors(node):
            return {
                "id array": f"SELECT count(*) FROM models m JOIN unnest((SELECT ids FROM models WHERE id = {node})) AS a(id) ON m.id = a.id",
                "recursive CTE": f"WITH RECURSIVE up(id, parent_id) AS (SELECT id, parent_id FROM models WHERE id = {node} UNION ALL SELECT m.id, m.parent_id FROM models m JOIN up ON m.id = up.parent_id) SELECT count(*) FROM up",
            }

        typical = 3
        queries = [
            (f"descendants of base1 (the big family)", descendants(2)),
            (f"descendants of a typical base", descendants(typical + 1)),
            (f"ancestors of the deepest chain student ({args.chain + 1} up)", ancestors(deepest)),
            (f"descendants of base0 (with the chain)", descendants(1)),
        ]
        print(f"{len(paths):,} models; medians of {args.runs} (EXPLAIN ANALYZE execution time), PostgreSQL {psql('SHOW server_version').strip()}\n")
        print(f"Text path (B-tree), longest path {longest:,} bytes: {text_path}")
        print(f"ltree (GiST): {ltree_index}\n")
        print("| query | rows | id array + GIN ms | recursive CTE ms |\n|---|---:|---:|---:|")
        for label, variants in queries:
            counts = {name: psql(sql).strip() for name, sql in variants.items()}
            if len(set(counts.values())) != 1:
                raise RuntimeError(f"{label}: the representations disagree: {counts}")
            times = {}
            for name, sql in variants.items():
                samples = []
                for _ in range(args.runs):
                    plan = psql("EXPLAIN (ANALYZE, TIMING OFF) " + sql)
                    samples.append(float(plan.split("Execution Time: ")[1].split(" ms")[0]))
                times[name] = statistics.median(samples)
            print(f"| {label} | {counts['id array']} | {times['id array']:.2f} | {times['recursive CTE']:.2f} |")
        print(f"\nindex sizes: id array GIN {sizes['models_ids'] / 2**20:.1f} MiB, parent_id B-tree {sizes['models_parent'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
