"""The adapter SDK's outbound side: the messages an adapter must deliver on its channels, and their outcomes.

::

    from caseledger.ledger import OutboundClient

    with OutboundClient("https://ledger.example:8443", token=ADAPTER_TOKEN, after=saved_position) as outbound:
        for message in outbound.messages():             # waits for the next one (long poll)
            try:
                send_mail(to=message.address, subject=message.subject, body=message.text,
                          in_reply_to=message.in_reply_to)
            except MailRefused:
                outbound.failed(message, "rejected")    # a code: bounced, invalid_address, rejected …
            else:
                outbound.delivered(message)
            save_position(message.position)

The token is an ``adapter`` principal's (``caseledger principals add mail-gateway-1 --role adapter``)
whose name has an adapter key with its channels (``caseledger adapters add mail-gateway-1 --channels
email``): the service opens for it, and it alone, the messages of those channels. Each message comes
once per reading; a message already reported delivered or failed is not handed out again, so
starting again from an older position (or 0) re-reads only what is still pending. A crash between
sending and reporting sends that message again on restart: report as soon as the channel answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType

from caseledger.ledger.domain.values import SYSTEM, DeliveryFailure
from caseledger.ledger.intake.outbound import OutboundMessage
from caseledger.ledger.service.client import LedgerClient

__all__ = ["OutboundClient"]

WAIT_S = 15.0  # how long one long poll waits for a message before asking again (the service caps it at 20 s)


class OutboundClient:
    """Reads the outbound feed of the token's adapter and reports each message delivered or failed."""

    def __init__(self, url: str, token: str, *, after: int = 0, limit: int = 100, wait_s: float = WAIT_S,
                 timeout_s: float = 60.0, verify: bool | str = True) -> None:
        self._ledger = LedgerClient(url, token, timeout_s=max(timeout_s, wait_s + 10), verify=verify)
        self.position = after  # the store position read up to: what to pass as ``after`` after a restart
        self.limit = limit
        self.wait_s = wait_s

    def __enter__(self) -> OutboundClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._ledger.close()

    def poll(self, *, wait_s: float | None = None) -> list[OutboundMessage]:
        """The next pending messages (waiting up to ``wait_s`` for one; 0: answer at once), oldest first."""
        page = self._ledger.outbound_page(after=self.position, limit=self.limit,
                                          wait_s=self.wait_s if wait_s is None else wait_s)
        self.position = int(page["position"])
        return [OutboundMessage.from_record(record) for record in page["messages"]]

    def messages(self, *, until: Callable[[], bool] = lambda: False) -> Iterator[OutboundMessage]:
        """Every message to deliver, as it comes, until ``until()`` says stop (checked between polls)."""
        while not until():
            yield from self.poll()

    # The service records the token's principal as who reports: the actor the client's commands take is not sent.

    def delivered(self, message: OutboundMessage, *, at: datetime | None = None) -> None:
        """The channel delivered ``message`` (``at``: when, as the channel says; default now)."""
        self._ledger.record_delivery(message.reference, actor=SYSTEM, message_id=message.message_id,
                                     delivered_at=at or datetime.now(UTC))

    def failed(self, message: OutboundMessage, reason: str | DeliveryFailure, *, at: datetime | None = None) -> None:
        """The channel could not deliver ``message``: ``reason`` is a code (:class:`DeliveryFailure`), never the
        channel's own words; the message stays undelivered and its deadline runs on."""
        code = DeliveryFailure.parse(str(reason))
        self._ledger.record_delivery_failure(message.reference, actor=SYSTEM, message_id=message.message_id,
                                             reason=code.value, failed_at=at)
