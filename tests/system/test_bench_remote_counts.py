"""``temposplit bench server --server``: the counts come from the SUMMARYs (docs/deployment.md),
and a client whose SUMMARY never came is counted apart, not as frames without a record."""

from temposplit.host import edge as edge_module
from temposplit.server import bench


def test_a_remote_benchs_counts_are_its_summaries(tmp_path, make_server, replay_file, monkeypatch):
    srv = make_server(max_streams_per_client=0, max_new_streams_per_client=0, max_connections_per_client=0)
    real = edge_module.Edge

    class LostSummary(real):
        def run(self, *a, **k):
            report = real.run(self, *a, **k)
            if self.stream.endswith("-1"):  # this client's SUMMARY lost with its connection
                report.summary = None
            return report

    monkeypatch.setattr(edge_module, "Edge", LostSummary)
    r = bench.run_bench(3, 4, str(replay_file), f"127.0.0.1:{srv.address[1]}", None, None, str(tmp_path))
    assert r["failed_clients"] == [] and r["clients_without_summary"] == 1
    assert r["frames_without_record"] == 0  # the two SUMMARYs count every one of their frames
    assert r["frames_with_detections"] + r["frames_with_error_record"] == 2 * 4  # not the third client's ACKs
