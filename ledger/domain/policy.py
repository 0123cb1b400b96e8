"""Response policy: when an inbound contact must be acknowledged and answered, and in whose words.

Every contact the ledger records gets an acknowledgement carrying a respond-by deadline (story S2).
The deadline comes from a :class:`ResponsePolicy` — a :class:`Delay` per channel and per category —
counted on a :class:`BusinessCalendar`: working days, opening hours and holidays in one time zone.
Every instant returned is timezone-aware UTC; naive datetimes are refused.

Business time, business days and daylight saving time are defined with the calendar, in
:mod:`caseledger.ledger.domain.business_time`.

Policy file (TOML)
    ::

        [calendar]                          # required
        timezone = "Europe/Paris"           # required: an IANA time zone name
        working_days = ["mon", "tue", "wed", "thu", "fri"]  # default Monday to Friday
        opens = "09:00"                     # default 09:00; "HH:MM", "HH:MM:SS" or a TOML time
        closes = "18:00"                    # default 18:00; later than opens, the same day
        public_holidays = "FR"              # optional: a country's public holidays (the holidays package)
        subdivision = "6AE"                 # optional: a subdivision as that package names it (Alsace)
        closing_days = [2026-12-24]         # the company's own closing days (TOML dates or "YYYY-MM-DD");
        holidays = [2026-12-31]             # the older name of closing_days, still read

        [acknowledge]                       # required
        within = "1h"                       # "0m" means immediately
        spoken_in_writing = false           # true: a phone/branch contact is acknowledged in writing

        [confirm]                           # optional
        within = "1d"                       # a spoken promise's written confirmation is delivered by then

        [texts]                             # optional: what the customer reads
        locale = "fr_FR"                    # default locale; timezone = "…" (default: the calendar's)
        company = "Banque Exemple"          # who signs the texts
        templates = "templates"             # a folder of <locale>/<kind>.txt (relative to the file)

        [texts.channel.social]              # optional: a channel's own default locale and/or timezone
        locale = "en"

        [respond]                           # required
        default = "2d"                      # required: when no rule below applies

        [respond.channel]                   # optional: one delay per channel
        chat = "4h"

        [respond.category]                  # optional: one delay per category, any channel
        complaint = "10d"

        [respond.channel_category.email]    # optional: one table per channel, a delay per category
        complaint = "5d"

    A delay is a whole number and a unit: ``"90m"`` business minutes, ``"4h"`` business hours,
    ``"2d"`` business days, ``"2mo"`` calendar months. Channels are those of :class:`ledger.values.Channel`; categories are
    free words, compared in lower case. The most specific rule wins: channel and category, then
    category, then channel, then ``default``. Unknown keys, channels and weekdays are errors, so
    a typo never silently falls back to a default.
"""


from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from caseledger.ledger.domain.business_time import BusinessCalendar, Delay
from caseledger.ledger.domain.retention import RetentionPolicy
from caseledger.ledger.domain.texts import TextSettings
from caseledger.ledger.domain.values import Channel, category_key
from caseledger.ledger.errors import ConfigurationError, ValidationError

__all__ = ["ResponsePolicy"]

_DEFAULT_FILE = "default_policy.toml"


@dataclass(frozen=True, kw_only=True)
class ResponsePolicy:
    """How soon an inbound contact must be acknowledged and answered, by channel and category."""

    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    acknowledge_within: Delay
    respond_within: Mapping[str, Delay] = field(default_factory=dict)
    category_respond_within: Mapping[str, Delay] = field(default_factory=dict)
    channel_category_respond_within: Mapping[tuple[str, str], Delay] = field(default_factory=dict)
    default_respond_within: Delay
    # How soon the written confirmation of a promise made by phone or at a branch must be delivered.
    confirm_within: Delay = field(default_factory=lambda: Delay(amount=1, unit="days"))
    # Acknowledge a contact made by phone or at a branch in writing (on the customer's written channel).
    acknowledge_spoken_in_writing: bool = False
    texts: TextSettings = field(default_factory=TextSettings)
    name: str | None = None  # a shipped preset's name (acpr-2022-r-01), or None
    retention: RetentionPolicy | None = None  # when tick erases customers (ledger.domain.retention)

    def __post_init__(self) -> None:
        if not isinstance(self.calendar, BusinessCalendar):
            raise ValidationError(f"calendar must be a BusinessCalendar, got {self.calendar!r}")
        by_channel = {Channel.parse(k).value: v for k, v in self.respond_within.items()}
        by_category = {self._category_key(k): v for k, v in self.category_respond_within.items()}
        by_both = {
            (Channel.parse(ch).value, self._category_key(cat)): v
            for (ch, cat), v in self.channel_category_respond_within.items()
        }
        if len(by_channel) + len(by_category) + len(by_both) != (
            len(self.respond_within)
            + len(self.category_respond_within)
            + len(self.channel_category_respond_within)
        ):
            raise ValidationError("a channel or category is given twice once written in lower case; keep one")
        if not isinstance(self.texts, TextSettings):
            raise ValidationError(f"texts must be TextSettings, got {self.texts!r}")
        delays = [self.acknowledge_within, self.default_respond_within, self.confirm_within]
        delays += [*by_channel.values(), *by_category.values(), *by_both.values()]
        if not all(isinstance(d, Delay) for d in delays):
            raise ValidationError("every delay of a response policy must be a Delay, e.g. Delay.parse('4h')")
        object.__setattr__(self, "respond_within", MappingProxyType(by_channel))
        object.__setattr__(self, "category_respond_within", MappingProxyType(by_category))
        object.__setattr__(self, "channel_category_respond_within", MappingProxyType(by_both))

    @staticmethod
    def _category_key(value: str) -> str:
        key = category_key(value) if isinstance(value, str) else None
        if key is None:
            raise ValidationError(f"a category must be a non-empty word, got {value!r}")
        return key

    def respond_by(self, *, channel: str, category: str | None, received_at: datetime) -> datetime:
        """When the answer is due, by the most specific rule: channel and category, category, channel."""
        return self._respond_within(channel, category).apply(self.calendar, received_at)

    def acknowledge_by(self, *, channel: str, received_at: datetime) -> datetime:
        """When the acknowledgement of a contact received on ``channel`` is due."""
        Channel.parse(channel)
        return self.acknowledge_within.apply(self.calendar, received_at)

    def _respond_within(self, channel: str, category: str | None) -> Delay:
        """Channel and category, then category, then channel, then the default."""
        name = Channel.parse(channel).value
        topic = category_key(category) if category else None
        if topic is not None:
            for rule in (
                self.channel_category_respond_within.get((name, topic)),
                self.category_respond_within.get(topic),
            ):
                if rule is not None:
                    return rule
        return self.respond_within.get(name, self.default_respond_within)

    def confirm_by(self, *, issued_at: datetime) -> datetime:
        """When a written confirmation issued at ``issued_at`` must have reached the customer."""
        return self.confirm_within.apply(self.calendar, issued_at)

    @classmethod
    def default(cls) -> ResponsePolicy:
        """The built-in policy, ``ledger/domain/default_policy.toml``."""
        return cls.from_toml_text(cls.default_text(), source=f"built-in ledger/domain/{_DEFAULT_FILE}")

    @staticmethod
    def default_text() -> str:
        """The built-in policy file's text: a starting point for a company's own."""
        return resources.files("caseledger.ledger.domain").joinpath(_DEFAULT_FILE).read_text(encoding="utf-8")

    @staticmethod
    def presets() -> list[str]:
        """The names of the shipped policies (``ledger/domain/presets/<name>.toml``)."""
        folder = resources.files("caseledger.ledger.domain").joinpath("presets")
        return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))

    @classmethod
    def named(cls, name: str) -> ResponsePolicy:
        """A shipped policy by name, e.g. ``acpr-2022-r-01`` (French banking complaints)."""
        key = name.strip().lower()
        if key not in cls.presets():
            raise ConfigurationError(
                f"no shipped policy named {name!r}; the shipped ones are {', '.join(cls.presets())}, or give "
                "the path of a TOML policy file"
            )
        folder = resources.files("caseledger.ledger.domain").joinpath("presets")
        text = folder.joinpath(f"{key}.toml").read_text(encoding="utf-8")
        policy = cls.from_toml_text(text, source=f"shipped policy {key}")
        object.__setattr__(policy, "name", key)
        return policy

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | None) -> ResponsePolicy:
        """A policy file's path, a shipped policy's name, or (None) the built-in default."""
        if spec is None:
            return cls.default()
        text = os.fsdecode(spec)
        if not Path(text).exists() and text.strip().lower() in cls.presets():
            return cls.named(text)
        return cls.from_toml(text)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> ResponsePolicy:
        """The policy in a TOML file (format in the module docstring)."""
        source = os.fsdecode(path)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigurationError(
                f"response policy {source} does not exist; give the path of an existing TOML policy with "
                "--policy or CASELEDGER_POLICY, or unset both to use the built-in policy"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(
                f"response policy {source} cannot be read ({error}); make it a readable UTF-8 TOML file"
            ) from None
        return cls.from_toml_text(text, source=source, folder=Path(source).parent)

    @classmethod
    def from_toml_text(cls, text: str, *, source: str = "<string>", folder: Path | None = None) -> ResponsePolicy:
        """The policy in TOML ``text``; ``source`` names it in error messages.

        ``folder`` is where a relative ``texts.templates`` folder is found (the policy file's own).
        """
        from caseledger.ledger.domain.policy_file import PolicyFile

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(
                f"response policy {source} is not valid TOML ({error}); fix the syntax there"
            ) from None
        return PolicyFile(source, folder=folder).policy(cls, data)

    def describe(self) -> str:
        """A few lines for a human: the calendar and every rule."""
        lines = [
            self.calendar._describe(),
            f"Acknowledge {self.acknowledge_within._spoken()}"
            + (", in writing for phone and branch contacts" if self.acknowledge_spoken_in_writing else ""),
            f"Respond {self.default_respond_within._spoken()} unless a rule below applies",
        ]
        rules = [
            ("by channel", dict(self.respond_within)),
            ("by category", dict(self.category_respond_within)),
            (
                "by channel and category",
                {f"{ch}/{cat}": v for (ch, cat), v in self.channel_category_respond_within.items()},
            ),
        ]
        for title, rule in rules:
            if rule:
                lines.append(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in sorted(rule.items())))
        lines.append(f"Confirm promises made by phone or at a branch in writing, delivered {self.confirm_within._spoken()}")
        texts = self.texts
        lines.append(
            f"Customer texts in {texts.locale} ({texts.time_zone or self.calendar.timezone}) unless the customer "
            f"chose otherwise; signed {texts.company}" + (f"; templates from {texts.templates}" if texts.templates else "")
        )
        return "\n".join(lines)
