"""SQLAlchemy 2 ORM with pgvector: a mapped Vector(384) column, an HNSW index, distance queries.

    Item.embedding.cosine_distance(q)     <=>
    Item.embedding.l2_distance(q)         <->
    Item.embedding.max_inner_product(q)   <#>  (negative inner product)

Schema changes for an existing table belong in migrations: see alembic_migration.py.

Run:  python sqlalchemy_orm.py
"""

import sys

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import Index, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from _env import describe, sqlalchemy_url

DIMS = 384


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "orm_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(50))
    embedding = mapped_column(Vector(DIMS), nullable=False)

    __table_args__ = (
        Index("orm_items_embedding_hnsw", "embedding", postgresql_using="hnsw",
              postgresql_with={"m": 16, "ef_construction": 64},
              postgresql_ops={"embedding": "vector_cosine_ops"}),
    )


def unit(vec: np.ndarray) -> np.ndarray:
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def main() -> int:
    print(f"connecting as {describe()}")
    engine = create_engine(sqlalchemy_url())  # the URL's repr shows the password as ***
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    print(f"created table {Item.__tablename__} with an HNSW index (vector_cosine_ops)")
    try:
        rng = np.random.default_rng(7)
        fruit, tools = unit(rng.standard_normal(DIMS)), unit(rng.standard_normal(DIMS))
        rows = [("apple", "fruit", fruit), ("pear", "fruit", fruit), ("plum", "fruit", fruit),
                ("hammer", "tool", tools), ("saw", "tool", tools)]
        with Session(engine) as session:
            session.add_all(Item(name=name, category=category, embedding=unit(centre + 0.5 * unit(rng.standard_normal(DIMS))))
                            for name, category, centre in rows)
            session.commit()
            print(f"inserted {len(rows)} items (two clusters: fruit, tool)")

            plum = session.scalars(select(Item).where(Item.name == "plum")).one()
            query = unit(plum.embedding + 0.2 * unit(rng.standard_normal(DIMS)))  # read back as a numpy array
            print("query: the 'plum' vector plus noise\n")
            failures = 0
            for label, distance in (("cosine", Item.embedding.cosine_distance(query)),
                                    ("L2", Item.embedding.l2_distance(query)),
                                    ("inner product", Item.embedding.max_inner_product(query))):
                found = session.execute(select(Item.name, distance.label("distance")).order_by(distance).limit(3)).all()
                print(f"{label}: " + ", ".join(f"{name} {d:.4f}" for name, d in found))
                failures += found[0].name != "plum"

            near = session.scalars(select(Item.name).where(Item.embedding.cosine_distance(query) < 0.5)
                                   .order_by(Item.embedding.cosine_distance(query))).all()
            print(f"\nwithin cosine distance 0.5: {near}")
            tools_first = session.scalars(select(Item.name).where(Item.category == "tool")
                                          .order_by(Item.embedding.cosine_distance(query)).limit(1)).one()
            print(f"nearest tool (filter + ORDER BY): {tools_first}")
            centroids = select(Item.category, func.avg(Item.embedding, type_=Vector(DIMS))).group_by(Item.category)
            for category, centroid in session.execute(centroids.order_by(Item.category)):
                print(f"avg(embedding) of {category}: {len(centroid)} dims, cosine "
                      f"to query {float(np.dot(unit(centroid), query)):.3f}")
            failures += "plum" not in near or "hammer" in near
        if failures:
            print("unexpected results", file=sys.stderr)
            return 1
        print("\nnearest neighbour: plum by all three operators")
        return 0
    finally:
        Base.metadata.drop_all(engine)
        print(f"dropped table {Item.__tablename__}")
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
