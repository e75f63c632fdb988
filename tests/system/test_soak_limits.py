"""The soak runs as many streams as it is told: every one of them comes from 127.0.0.1, and
the server it starts has no per-client limits (``python -m temposplit.server.soak --streams
70`` stopped at the 61st stream: the default --max-new-streams-per-client is 60 per 60 s)."""

import pytest

from temposplit.server import bench, soak


@pytest.mark.models
def test_the_soak_is_not_stopped_by_the_per_client_limits(tmp_path, monkeypatch, replay_file):
    """The server's defaults lowered to 2 (before the soak's own options, which replace
    them as they replace the real defaults): 1 + 4 streams from one address all run."""
    real = bench.start_server
    lowered = (
        "--max-new-streams-per-client",
        "2",
        "--max-streams-per-client",
        "1",
        "--max-connections-per-client",
        "1",
    )

    def with_low_defaults(out_dir, max_streams=64, options=()):
        return real(out_dir, max_streams, (*lowered, *options))

    monkeypatch.setattr(bench, "start_server", with_low_defaults)
    r = soak.run(4, 2, str(replay_file), str(tmp_path / "out"), checkpoints=4)
    assert r["edge_errors"] == 0
    assert [m["streams"] for m in r["checkpoints"]] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == [f"soak{k}" for k in range(5)]
