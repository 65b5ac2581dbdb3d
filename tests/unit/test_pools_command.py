"""`celerykit pools`: the arguments the rolling playbooks pass, and the ones refused before any
worker is asked anything."""

import pytest

from celerykit.cli import main


def test_a_node_names_its_pool_host_and_queues():
    from celerykit.pools import parse_node

    assert parse_node("high@worker1=high_priority") == ("high@worker1", ("high_priority",))
    assert parse_node("medium@w=medium_priority,default") == ("medium@w", ("medium_priority", "default"))


@pytest.mark.parametrize("node", ["high", "high@worker1", "high@worker1=", "worker1=high_priority"])
def test_a_node_without_pool_host_or_queues_is_refused(node: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stopped:
        main(["pools", "drain", node])
    assert stopped.value.code == 2
    assert "expected <pool>@<host>=<queue>[,<queue>...]" in capsys.readouterr().err


def test_drain_and_ready_need_a_worker_status_does_not(capsys: pytest.CaptureFixture[str]):
    for step in ("drain", "ready"):
        with pytest.raises(SystemExit):
            main(["pools", step])
    assert "required: POOL@HOST=QUEUE[,QUEUE]" in capsys.readouterr().err


def test_the_nodes_a_host_is_given_name_its_workers_as_the_commands_parse_them():
    from celerykit.pools import format_nodes, parse_node

    pools = [
        {"name": "high", "queues": ["high_priority"]},
        {"name": "medium", "queues": ["medium_priority", "default"]},
    ]
    nodes = format_nodes(pools, "worker1")
    assert [parse_node(node) for node in nodes] == [
        ("high@worker1", ("high_priority",)),
        ("medium@worker1", ("medium_priority", "default")),
    ]
