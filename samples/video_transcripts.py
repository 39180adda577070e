"""Video transcripts: cut timestamped transcripts into time windows, embed them, find the moment that answers a query.

    transcript   (start second, sentence) lines per video, as a speech-to-text service would return them
    chunks       consecutive lines grouped into windows of WINDOW seconds; a chunk keeps the start of its first
                 line and the end of its last, so a hit links straight to that moment of the video
    search       HNSW (cosine) over the chunks' embeddings; returns video id, start and end seconds, similarity

The transcripts are generated here (three short videos, each line lasting ~0.4 s per word). The checks hold
with the real model and with the hashing stand-in: each query shares words with the line it should find.

Run:  python video_transcripts.py      (the real model gives the meaning; see _embed.py)
"""

import sys

from pgvector.psycopg2 import register_vector

import _embed
from _env import connect, describe

TABLE = "video_chunks"
WINDOW = 20.0  # seconds per chunk

VIDEOS = {
    "bread-101": [
        "Welcome back to the kitchen, today we bake a country loaf.",
        "Mix flour, water and a spoon of salt in a large bowl.",
        "Add the sourdough starter once it is bubbly and smells sour.",
        "Knead the dough for ten minutes until it feels smooth and elastic.",
        "Let it rise overnight in the fridge, covered with a damp towel.",
        "In the morning, shape the loaf and dust it with rice flour.",
        "Preheat the oven with the cast iron pot inside for an hour.",
        "Score the top with a razor blade so the steam can escape.",
        "Bake covered for twenty minutes, then uncovered until deep brown.",
        "Wait until the bread has cooled before you slice it.",
    ],
    "bike-repair": [
        "Hi, in this video we fix a flat tyre on a road bike.",
        "Shift to the smallest cog and open the quick release lever.",
        "Use two plastic tyre levers to pop the tyre off the rim.",
        "Pull out the inner tube and pump a little air into it.",
        "Listen for the hiss or dip the tube in water to find the puncture.",
        "Roughen the rubber with sandpaper and apply the glueless patch.",
        "Check the inside of the tyre for glass or a thorn.",
        "Refit the tube, seat the tyre bead and inflate to the pressure on the sidewall.",
        "Finally, adjust the brake pads so they do not rub the rim.",
    ],
    "budget-talk": [
        "Good evening, tonight we talk about a household budget.",
        "Write down every expense for one month, even coffee.",
        "Split spending into needs, wants and savings.",
        "A common rule puts fifty percent on needs and twenty percent on savings.",
        "Build an emergency fund covering three to six months of rent and food.",
        "Pay off credit card debt with the highest interest rate first.",
        "Automate a monthly transfer to your savings account on payday.",
        "Review your subscriptions and cancel the streaming services you never watch.",
    ],
}

# query -> (video, the line it should land in)
QUERIES = {
    "knead until smooth and elastic": ("bread-101", VIDEOS["bread-101"][3]),
    "find the puncture in the inner tube": ("bike-repair", VIDEOS["bike-repair"][4]),
    "cancel streaming subscriptions": ("budget-talk", VIDEOS["budget-talk"][7]),
}


def transcript(lines: list[str]) -> list[tuple[float, float, str]]:
    """(start, end, text) per line: each line lasts 0.4 s per word plus a 0.5 s pause."""
    out, clock = [], 0.0
    for text in lines:
        duration = 0.4 * len(text.split())
        out.append((round(clock, 1), round(clock + duration, 1), text))
        clock += duration + 0.5
    return out


def chunks(timed: list[tuple[float, float, str]], window: float = WINDOW) -> list[tuple[float, float, str]]:
    """Consecutive lines grouped by the window their start falls in: (first start, last end, joined text)."""
    groups: dict[int, list] = {}
    for line in timed:
        groups.setdefault(int(line[0] // window), []).append(line)
    return [(g[0][0], g[-1][1], " ".join(text for _, _, text in g)) for g in groups.values()]


def search(cur, embedder, query: str, k: int = 3) -> list[tuple]:
    """(video_id, start_s, end_s, similarity) of the k nearest chunks."""
    vec = embedder.encode([query])[0]
    cur.execute(f"SELECT video_id, start_s, end_s, 1 - (embedding <=> %s) FROM {TABLE} ORDER BY embedding <=> %s LIMIT %s",
                (vec, vec, k))
    return cur.fetchall()


def main() -> int:
    embedder = _embed.load()
    print(f"embedding model: {embedder.name} ({embedder.source})")
    print(f"connecting as {describe()}")
    conn = connect()
    conn.autocommit = True
    register_vector(conn)
    cur = conn.cursor()
    try:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"""CREATE TABLE {TABLE} (
            id bigserial PRIMARY KEY,
            video_id text NOT NULL,
            start_s double precision NOT NULL,
            end_s double precision NOT NULL,
            body text NOT NULL,
            embedding vector({_embed.DIMS}) NOT NULL)""")
        timed = {video: transcript(lines) for video, lines in VIDEOS.items()}
        rows = [(video, *chunk) for video, lines in timed.items() for chunk in chunks(lines)]
        vectors = embedder.encode([body for _, _, _, body in rows])
        for (video, start, end, body), vec in zip(rows, vectors, strict=True):
            cur.execute(f"INSERT INTO {TABLE} (video_id, start_s, end_s, body, embedding) VALUES (%s, %s, %s, %s, %s)",
                        (video, start, end, body, vec))
        cur.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
        print(f"stored {len(rows)} chunks of {WINDOW:.0f} s from {len(VIDEOS)} videos in {TABLE} with an HNSW (cosine) index\n")

        failures = 0
        for query, (video, line) in QUERIES.items():
            start, end, _ = next(t for t in timed[video] if t[2] == line)
            hits = search(cur, embedder, query)
            print(f"query: {query!r}   (said in {video} at {start:.1f}-{end:.1f} s)")
            for hit_video, hit_start, hit_end, similarity in hits:
                link = f"{hit_video}?t={int(hit_start)}"
                print(f"  {similarity:6.3f}  {hit_video:12s} {hit_start:6.1f} - {hit_end:6.1f} s   ({link})")
            top_video, top_start, top_end, _ = hits[0]
            if top_video != video or not top_start <= start < end <= top_end:
                failures += 1
                print("  FAIL: the first hit does not contain that line")
        print(f"\n{len(QUERIES) - failures}/{len(QUERIES)} queries landed in the window that contains the answer")
        return 1 if failures else 0
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        print(f"dropped table {TABLE}")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
