"""Reporting: reads records the pipeline wrote and renders them; nothing here attacks or recomputes a number.

- `records`: the flat records table (`load_records`) and its pivots; `leaderboard`: one row per classifier
  and the model cards; `claims`: every registered paper's headline claim, judged (loops over `PAPERS`);
- `deviations`: the shape of a paper's deviation table (each paper keeps its rows in its folder);
- `pages`, `plots`: HTML pages/tables and the figure style.
"""
