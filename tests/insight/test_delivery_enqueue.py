"""Deliveries are enqueued by task name (insight.tasks imports the services): the name must stay true."""

from __future__ import annotations

from insight import tasks
from insight.services import DELIVERY_SEND_TASK


def test_deliveries_are_enqueued_under_the_name_of_the_delivery_task():
    assert tasks.delivery_send_task.name == DELIVERY_SEND_TASK
