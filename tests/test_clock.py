import socket

import pytest
import torch.multiprocessing as mp

from trainer_callbacks.clock import BudgetClock, ManualTime, main_value_and_any_flag


def test_reading_moves_only_on_tick():
    time = ManualTime(1000.0)
    clock = BudgetClock(100.0, time_fn=time)
    clock.start()
    time.advance(30)
    assert clock.measure() == 30
    assert clock.elapsed == 0
    assert clock.tick() == 30
    assert (clock.elapsed, clock.fraction, clock.remaining) == (30, 0.3, 70)


def test_simulates_a_day_and_clamps_remaining():
    time = ManualTime()
    clock = BudgetClock(24 * 3600, time_fn=time)
    clock.start()
    time.advance(25 * 3600)
    clock.tick()
    assert clock.fraction == pytest.approx(25 / 24)
    assert clock.remaining == 0


def test_elapsed_before_counts_and_stop_start_pauses():
    time = ManualTime()
    clock = BudgetClock(100.0, time_fn=time, elapsed_before=40)
    assert clock.elapsed == 40 and not clock.started
    clock.start()
    time.advance(10)
    clock.stop()
    time.advance(1000)  # not counted: the clock is stopped
    clock.start()
    time.advance(5)
    assert clock.tick() == 55


def test_state_dict_round_trip_continues_the_budget():
    time = ManualTime()
    first = BudgetClock(100.0, time_fn=time)
    first.start()
    time.advance(42)
    saved = first.state_dict()
    assert saved == {"elapsed_seconds": 42, "budget_seconds": 100, "reading_seconds": 0, "steps": 0}

    second = BudgetClock(100.0, time_fn=ManualTime(5.0))
    second.load_state_dict(saved)
    second.start()
    second.time_fn.advance(8)
    assert second.tick() == 50


def test_changed_budget_applies_with_a_warning(caplog):
    clock = BudgetClock(200.0, time_fn=ManualTime())
    with caplog.at_level("WARNING"):
        clock.load_state_dict({"elapsed_seconds": 50.0, "budget_seconds": 100.0})
    assert "applies from now on" in caplog.text
    assert clock.fraction == 0.25


def test_manual_time_only_moves_forward():
    with pytest.raises(ValueError, match="forward"):
        ManualTime().advance(-1)


def test_agreement_without_process_group_is_identity():
    assert main_value_and_any_flag(3.5, True) == (3.5, True)


def test_interrupt_shows_at_the_next_tick_and_a_restart_clears_it():
    clock = BudgetClock(100.0, time_fn=ManualTime())
    clock.start()
    clock.request_interrupt()
    assert not clock.interrupted
    clock.tick()
    assert clock.interrupted
    clock.stop()
    clock.start()
    clock.tick()
    assert not clock.interrupted


def _tick_on_rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # Each rank measures a different time; both must read rank 0's. Rank 1 alone is asked to interrupt.
        time = ManualTime()
        clock = BudgetClock(100.0, time_fn=time)
        clock.start()
        time.advance(100.0 if rank == 0 else 99.0)
        clock.tick()
        first = (clock.elapsed, clock.interrupted)
        if rank == 1:
            clock.request_interrupt()
        clock.tick()
        results[rank] = (first, clock.interrupted)
    finally:
        dist.destroy_process_group()


def test_tick_adopts_the_main_process_time_on_every_rank():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        # fork: the children inherit the imported modules instead of importing them again (seconds each).
        mp.start_processes(_tick_on_rank, args=(port, results), nprocs=2, start_method="fork")
        assert dict(results) == {0: ((100.0, False), True), 1: ((100.0, False), True)}
