# Leaderboard, claims table and HTML report.
