"""Create a Prefect automation that sends a notification when any flow run of this project fails
(or crashes), on the server PREFECT_API_URL points at (a long-lived `prefect server start`).

    PREFECT_API_URL=http://127.0.0.1:4200/api python scripts/notify_on_failure.py \
        --webhook https://hooks.example.org/emoface          # any URL that takes a JSON POST
    ... --slack https://hooks.slack.com/services/...          # a Slack incoming webhook

Run it once per server: it saves a notification block named ``emoface-failures`` and an
automation of the same name (both replaced when run again). The notification names the flow
run, its state and its tags (commit, selection, DVC experiment).
"""

from __future__ import annotations

import argparse
import os
import sys

NAME = "emoface-failures"
BODY = ("Flow run {{ flow_run.name }} ended {{ flow_run.state.name }}: "
        "{{ flow_run.state.message }}\ntags: {{ flow_run.tags }}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--webhook", help="URL that receives a JSON POST {subject, body}")
    where.add_argument("--slack", help="Slack incoming-webhook URL")
    args = ap.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: point it at a running `prefect server start` "
              "(e.g. http://127.0.0.1:4200/api); a temporary server forgets the automation",
              file=sys.stderr)
        return 2

    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    if args.slack:
        block = SlackWebhook(url=args.slack)
    else:
        block = CustomWebhookNotificationBlock(
            name=NAME, url=args.webhook,
            json_data={"subject": "{{subject}}", "body": "{{body}}"})
    block_id = block.save(NAME, overwrite=True)
    try:
        Automation.read(name=NAME).delete()
    except ValueError:
        pass  # none yet
    automation = Automation(
        name=NAME,
        description="notify when an emoface flow run fails or crashes",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(block_document_id=block_id,
                                  subject="emoface: flow run {{ flow_run.name }} failed",
                                  body=BODY)],
    ).create()
    print(f"automation '{NAME}' ({automation.id}) notifies on failed or crashed flow runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
