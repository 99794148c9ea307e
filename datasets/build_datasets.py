#!/usr/bin/env python3
"""Build ftpipe's own small datasets, deterministically.

    python datasets/build_datasets.py            # rewrites the files next to this script
    python datasets/build_datasets.py --out DIR  # writes the same files under DIR

Standard library only. Every dataset draws from its own ``random.Random(SEED + offset)``, so
running the script again rewrites every file byte for byte (the test suite checks this).
All word lists, templates and facts below were written for ftpipe (CC0-1.0); no third-party
data is read or copied. The CARD.md files and README.md are hand-written and not generated.

In the two target datasets (ticket_routing, order_extraction), in concise_preference (its
prompts) and in support_chats (the concatenated user turns of each conversation) no input is an
exact or near duplicate of another input by ftpipe's leakage rule (reimplemented below, see
LEAK_NGRAM), so no train/validation/test split of them can leak: candidates that would break
this are drawn again during generation, and the finished rows are checked once more before they
are written. concise_preference prompts also never duplicate a held-out probe question or a
replay instruction, and no support_chats user turn duplicates a ticket_routing message.

Outputs (relative to the output folder):
    ticket_routing/ticket_routing.jsonl           target task, classification
    order_extraction/order_extraction.jsonl       target task, structured extraction
    capitals/capitals.jsonl                       held-out probe, free generation
    everyday_mc/everyday_mc.jsonl                 held-out probe, multiple choice
    word_opposites/word_opposites.jsonl           held-out probe, free generation
    general_instructions/general_instructions.jsonl   replay data
    harbor_handbook/harbor_handbook.txt           domain-adaptation raw text
    harbor_handbook/harbor_handbook_heldout.txt   held-out paragraphs for perplexity
    concise_preference/concise_preference.jsonl   preference pairs (prompt, chosen, rejected)
    support_chats/support_chats.jsonl             multi-turn chats, OpenAI "messages" format
    support_chats/support_chats_sharegpt.jsonl    the same chats, ShareGPT "conversations"

(support_chats/malformed/ holds hand-written fixtures for error tests; not generated here.)
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from pathlib import Path

SEED = 20240611

TICKET_LABELS = ["billing", "shipping", "technical", "account", "refund"]

# Field names per JSONL dataset (the test suite checks rows against these).
FIELDS = {
    "ticket_routing": ["label", "message"],
    "order_extraction": ["target", "text"],
    "capitals": ["aliases", "answer", "question"],
    "everyday_mc": ["answer", "choices", "question"],
    "word_opposites": ["aliases", "answer", "question"],
    "general_instructions": ["instruction", "response"],
    "concise_preference": ["answer", "chosen", "pair_type", "prompt", "rejected"],
}

# The field that is the model's input, per JSONL dataset (must be unique within a dataset).
INPUT_FIELD = {
    "ticket_routing": "message",
    "order_extraction": "text",
    "capitals": "question",
    "everyday_mc": "question",
    "word_opposites": "question",
    "general_instructions": "instruction",
    "concise_preference": "prompt",
}

# JSONL datasets in which no input is an exact or near duplicate of another input (so that no
# train/validation/test split of them can leak; see NearDuplicateGuard). support_chats has the
# same property for its concatenated user turns (checked in build_all).
NO_NEAR_DUPLICATES = ("ticket_routing", "order_extraction", "concise_preference")

# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lowercase, keep letters/digits, collapse whitespace (used for overlap checks)."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def number_words(n: int) -> str:
    ones = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen",
    ]
    tens = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy",
            8: "eighty", 9: "ninety"}
    if n < 20:
        return ones[n]
    if n < 100:
        return tens[n // 10] + ("-" + ones[n % 10] if n % 10 else "")
    raise ValueError(n)


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def cap_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def unique_rows(rows: list[dict], key: str) -> None:
    seen: set[str] = set()
    for row in rows:
        k = row[key].strip().lower()
        if k in seen:
            raise RuntimeError(f"duplicate input: {row[key]!r}")
        seen.add(k)


# The leakage rule ftpipe applies between training rows and evaluated rows
# (ftpipe.data.find_leaks / normalize_for_leakage), reimplemented here so that this script stays
# stdlib-only. Text A is a duplicate of text B when both are equal after normalisation
# (lowercase, punctuation removed, whitespace collapsed), or when at least LEAK_THRESHOLD of A's
# distinct word LEAK_NGRAM-grams occur in B (texts shorter than LEAK_NGRAM words are compared
# exactly only). The target datasets are built so that no row is a duplicate of any other row.
LEAK_NGRAM = 8
LEAK_THRESHOLD = 0.5


def normalize_for_leakage(text: str) -> str:
    """Same normalisation as ftpipe.data.normalize_for_leakage."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def word_ngrams(norm: str, n: int = LEAK_NGRAM) -> set[tuple[str, ...]]:
    words = norm.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


class NearDuplicateGuard:
    """Admits a text only when it is neither an exact nor a near duplicate of any text admitted
    before, in either direction (the new text against each old one, and each old one against
    the new text), so that the admitted set satisfies the leakage rule pairwise."""

    def __init__(self) -> None:
        self.exact: set[str] = set()
        self.sizes: list[int] = []
        self.index: dict[tuple[str, ...], list[int]] = {}

    def clashes(self, text: str) -> bool:
        """True when ``text`` is an exact or near duplicate of an admitted text (either way)."""
        norm = normalize_for_leakage(text)
        if norm in self.exact:
            return True
        grams = word_ngrams(norm)
        hits: dict[int, int] = {}
        for g in grams:
            for i in self.index.get(g, ()):
                hits[i] = hits.get(i, 0) + 1
        for i, count in hits.items():
            if count / len(grams) >= LEAK_THRESHOLD or count / self.sizes[i] >= LEAK_THRESHOLD:
                return True
        return False

    def add(self, text: str) -> None:
        """Record ``text`` without checking it (e.g. texts that others must not duplicate)."""
        norm = normalize_for_leakage(text)
        grams = word_ngrams(norm)
        new = len(self.sizes)
        self.exact.add(norm)
        self.sizes.append(len(grams))
        for g in grams:
            self.index.setdefault(g, []).append(new)

    def admit(self, text: str) -> bool:
        if self.clashes(text):
            return False
        self.add(text)
        return True


def check_no_near_duplicates(texts: list[str]) -> None:
    """Independent re-check of a finished dataset: raises if any text is an exact or near
    duplicate of another one."""
    norms = [normalize_for_leakage(t) for t in texts]
    first: dict[str, int] = {}
    for i, norm in enumerate(norms):
        if norm in first:
            raise RuntimeError(f"duplicate: {texts[first[norm]]!r}, {texts[i]!r}")
        first[norm] = i
    grams = [word_ngrams(norm) for norm in norms]
    index: dict[tuple[str, ...], list[int]] = {}
    for i, gs in enumerate(grams):
        for g in gs:
            index.setdefault(g, []).append(i)
    for j, gs in enumerate(grams):
        hits: dict[int, int] = {}
        for g in gs:
            for i in index[g]:
                if i != j:
                    hits[i] = hits.get(i, 0) + 1
        for i, count in hits.items():
            if count / len(gs) >= LEAK_THRESHOLD:
                raise RuntimeError(f"near duplicate ({count}/{len(gs)} {LEAK_NGRAM}-grams): "
                                   f"{texts[j]!r} in {texts[i]!r}")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


# --------------------------------------------------------------------------------------------
# 1. ticket_routing
# --------------------------------------------------------------------------------------------

# Templates below use two kinds of holes, filled per message by _tr_expand:
#   [a|b|c]  pick one alternative (an empty alternative makes the part optional; may be nested)
#   {slot}   a slot value drawn for this message by _tr_slots (products, dates, amounts, ...)
# Every message is built from many small choices, so long word sequences shared by two messages
# are rare; build_ticket_routing also rejects any message that would be an exact or near
# duplicate of one already kept (see NearDuplicateGuard).

TR_PRODUCTS = [
    "pair of wireless headphones", "coffee grinder", "standing desk", "air fryer", "yoga mat",
    "hiking backpack", "desk lamp", "electric kettle", "pair of running shoes", "winter jacket",
    "blender", "office chair", "camera bag", "rice cooker", "duvet set", "travel mug",
    "garden hose", "toaster", "bike helmet", "wall clock", "pair of hiking boots",
    "cast-iron pan", "stand mixer", "set of kitchen knives", "desk fan", "floor lamp",
    "bookshelf", "suitcase", "mattress topper", "pair of sunglasses", "espresso machine",
    "electric toothbrush", "set of bath towels", "dining chair", "gaming mouse",
    "mechanical keyboard", "picnic blanket", "water filter jug", "sewing machine",
    "bedside table", "raincoat", "cordless drill", "baby carrier", "camping stove",
]
TR_DEVICES = [
    "smart watch", "robot vacuum", "router", "tablet", "bluetooth speaker", "printer",
    "e-reader", "fitness tracker", "smart thermostat", "security camera", "laptop",
    "doorbell camera", "smart plug", "baby monitor", "smart scale", "streaming stick",
    "soundbar", "dashcam", "smart lock", "games console", "webcam", "smart display",
    "mesh Wi-Fi extender", "smart light strip",
]
TR_PHONES = [
    "Android phone", "iPhone", "iPhone 12", "iPhone 15", "Pixel 7", "Galaxy S21",
    "work phone", "old Android phone", "new phone",
]
TR_SYSTEMS = [
    "Android 13", "Android 14", "iOS 17", "iOS 16.5", "Windows 11", "Windows 10",
    "macOS Sonoma", "ChromeOS", "Ubuntu 22.04",
]
TR_BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "Chrome on my phone", "Safari on my iPad"]
TR_APPS = [
    "the mobile app", "the desktop app", "the web dashboard", "the app on my tablet",
    "the iPhone app", "the Android app", "the browser extension", "the Windows app",
    "the Mac app", "your app",
]
TR_SCREENS = ["settings", "orders", "profile", "notifications", "help", "search", "home"]
TR_PLANS = ["Basic", "Plus", "Premium", "Family", "Team", "Pro", "Starter", "Business",
            "Student", "Solo", "Unlimited", "Lite"]
TR_COUNTRIES = [
    "Norway", "Canada", "Portugal", "Japan", "Ireland", "Mexico", "Poland", "Australia",
    "Chile", "Greece", "Iceland", "Kenya", "New Zealand", "Estonia", "Morocco", "Singapore",
]
TR_CITIES = [
    "Leeds", "Bristol", "Cork", "Lyon", "Porto", "Turin", "Graz", "Ghent", "Utrecht", "Bergen",
    "Tallinn", "Krakow", "Brno", "Denver", "Austin", "Calgary", "Perth", "Osaka", "Nairobi",
    "Valencia", "Aarhus", "Hamburg",
]
TR_STREETS = [
    "Mill Lane", "Station Road", "Harbour Street", "Elm Grove", "Church Street", "Park Avenue",
    "Victoria Road", "Queen Street", "Orchard Close", "Kingsway", "Bridge Street", "Meadow Way",
]
TR_PLACES = [
    "my office", "my parents' house", "my new flat", "a pickup point near me",
    "my neighbour's address", "my work address", "the address on my account",
    "my sister's house in {city}", "{house} {street}", "the reception desk at my office",
    "my holiday flat in {city}", "a parcel locker on {street}",
]
TR_NAMES = [
    "Maria", "Tom", "Aisha", "Lukas", "Priya", "Sam", "Elena", "Kofi", "Hannah", "Diego", "Mei",
    "Oliver", "Fatima", "Jonas", "Chloe", "Ravi", "Ingrid", "Mateo", "Grace", "Yusuf", "Nora",
    "Ben", "Sofia", "Daniel", "Amara", "Felix", "Zoe", "Omar", "Lena", "Ethan",
]
TR_SURNAMES = [
    "Novak", "Okafor", "Lindqvist", "Patel", "Moreau", "Brennan", "Kowalski", "Tanaka", "Silva",
    "Fischer", "Haddad", "Murphy", "Jensen", "Rossi", "Adeyemi", "Walsh", "Costa", "Berg",
    "Nakamura", "Dubois",
]
TR_MAIL_DOMAINS = ["example.com", "example.net", "example.org", "mail.example", "inbox.example"]
TR_COMPANIES = [
    "Brightwell Studio", "Northgate Logistics", "Harlow Dental", "Kestrel Labs", "Bluefin Design",
    "Oakridge Bakery", "Meridian Consulting", "Larkspur Events", "Copperleaf Media",
    "Fenwick Architects",
]
TR_RELATIVES = ["partner", "husband", "wife", "flatmate", "son", "daughter", "mother", "brother"]
TR_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December"]
TR_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TR_STATUSES = ["in transit", "out for delivery", "label created", "at the sorting centre",
               "awaiting collection", "delayed", "held at depot"]
TR_FEES = ["service fee", "platform fee", "late payment fee", "processing fee",
           "currency conversion fee", "admin fee"]
TR_LANGUAGES = ["German", "Spanish", "French", "Polish", "Portuguese", "Dutch", "Italian"]
TR_TIMES_FIXED = [
    "yesterday", "last week", "this morning", "last night", "over the weekend",
    "at the start of the month", "earlier today", "the day before yesterday", "a fortnight ago",
    "last month", "just before the holidays", "at the end of last month",
]


def _tr_ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _tr_date(rng: random.Random) -> str:
    day, month = rng.randint(1, 28), rng.choice(TR_MONTHS)
    return rng.choice([f"{day} {month}", f"{month} {day}", f"the {_tr_ordinal(day)} of {month}"])


def _tr_time(rng: random.Random) -> str:
    """A past time phrase ("on 3 March", "last Friday", "five days ago", ...)."""
    r = rng.random()
    if r < 0.3:
        return rng.choice(TR_TIMES_FIXED)
    if r < 0.5:
        return f"{rng.choice(['on', 'last'])} {rng.choice(TR_WEEKDAYS)}"
    if r < 0.7:
        n, unit = rng.choice([(rng.randint(2, 12), "days"), (rng.randint(2, 4), "weeks")])
        return f"{number_words(n) if rng.random() < 0.6 else n} {unit} ago"
    return f"on {_tr_date(rng)}"


def _tr_since(rng: random.Random) -> str:
    """A past point in time that reads after "since" or "from" ("Monday", "3 March", ...)."""
    r = rng.random()
    if r < 0.35:
        return rng.choice(["yesterday", "last week", "this morning", "last night", "the weekend",
                           "the start of the month", "last month", "earlier today"])
    if r < 0.6:
        return rng.choice(["", "last "]) + rng.choice(TR_WEEKDAYS)
    return _tr_date(rng)


def _tr_amounts(rng: random.Random) -> tuple[str, str, str]:
    """Three different amounts in one currency: two from 5-399 (the first one higher) and a small
    one (2-39) for fees and price drops."""
    cur = rng.choice(["$", "€", "£"])
    values = sorted(rng.sample(range(5, 400), 2), reverse=True) + [rng.randint(2, 39)]
    out = []
    for v in values:
        if rng.random() < 0.2:
            out.append(f"{cur}{v}")
        else:
            out.append(f"{cur}{v}.{rng.choice(['00', '99', '49', '50', '95', '20', '75'])}")
    return out[0], out[1], out[2]


def _tr_slots(rng: random.Random) -> dict[str, str]:
    """One value for every slot a template may use (drawn fresh for each message)."""
    amount, amount2, small = _tr_amounts(rng)
    plan, plan2 = rng.sample(TR_PLANS, 2)
    city, city2 = rng.sample(TR_CITIES, 2)
    first, first2 = rng.sample(TR_NAMES, 2)
    surname = rng.choice(TR_SURNAMES)
    product = rng.choice(TR_PRODUCTS)
    seats = rng.randint(2, 40)
    nth, nth2 = rng.sample(range(1, 29), 2)
    n_days = rng.randint(5, 14)

    def email(name: str) -> str:
        local = rng.choice([f"{name}.{surname}", f"{name}{rng.randint(1, 99)}",
                            f"{name[0]}{surname}"])
        return f"{local.lower()}@{rng.choice(TR_MAIL_DOMAINS)}"

    def order() -> str:
        return rng.choice(["", "#", "no. "]) + str(rng.randint(10000, 9999999))

    def version() -> str:
        major, minor, patch = rng.randint(2, 17), rng.randint(0, 12), rng.randint(1, 9)
        return f"{major}.{minor}" + rng.choice(["", f".{patch}"])

    hobby = rng.choice(["runs", "cooks", "reads", "bakes", "draws", "hikes"])
    slots = {
        "amount": amount, "amount2": amount2, "small": small, "plan": plan, "plan2": plan2,
        "product": product, "product_a": f"{article(product)} {product}",
        "device": rng.choice(TR_DEVICES), "phone": rng.choice(TR_PHONES),
        "os": rng.choice(TR_SYSTEMS), "browser": rng.choice(TR_BROWSERS),
        "app": rng.choice(TR_APPS), "screen": rng.choice(TR_SCREENS),
        "time": _tr_time(rng), "since": _tr_since(rng), "date": _tr_date(rng),
        "date2": _tr_date(rng), "month": rng.choice(TR_MONTHS), "weekday": rng.choice(TR_WEEKDAYS),
        "year": str(rng.randint(2012, 2023)), "birth_year": str(rng.randint(1950, 2004)),
        "order": order(), "order2": str(rng.randint(10000, 9999999)),
        "invoice": f"INV-{rng.randint(1000, 999999)}", "ticket": f"T-{rng.randint(10000, 99999)}",
        "city": city, "city2": city2, "country": rng.choice(TR_COUNTRIES),
        "street": rng.choice(TR_STREETS), "house": str(rng.randint(1, 140)),
        "status": rng.choice(TR_STATUSES), "fee": rng.choice(TR_FEES),
        "code": rng.choice(["{}", "E{}", "E-{}", "ERR_{}"]).format(rng.randint(10, 9999)),
        "version": version(),
        "pct": str(rng.randint(3, 99)), "mb": str(rng.choice([5, 8, 10, 20, 25, 50, 100, 200])),
        "n_min": str(rng.randint(2, 30)), "n_hours": number_words(rng.randint(2, 9)),
        "n_sec": str(rng.randint(3, 45)), "n_tries": number_words(rng.randint(3, 12)),
        "n_days": str(n_days), "n_days2": str(n_days + rng.randint(4, 30)),
        "n_months": number_words(rng.randint(2, 18)), "n_boxes": number_words(rng.randint(3, 6)),
        "n_times": rng.choice(["twice", "three times", "four times", "five times"]),
        "nth": _tr_ordinal(nth), "nth2": _tr_ordinal(nth2),
        "seats": str(seats), "seats2": str(seats + rng.randint(1, 12)),
        "last4": f"{rng.randint(0, 9999):04d}", "last4b": f"{rng.randint(0, 9999):04d}",
        "vat": rng.choice(["GB", "IE", "DE", "NL", "FR"]) + str(rng.randint(10**8, 10**9 - 1)),
        "custno": f"C-{rng.randint(100000, 999999)}", "years": number_words(rng.randint(2, 15)),
        "name": first, "name2": first2, "name_typo": first[:2] + first[1:],  # "Maria" -> "Maaria"
        "surname": surname, "surname2": rng.choice(TR_SURNAMES),
        "email": email(first), "email2": email(first),
        "user": f"{first.lower()}_{hobby}{rng.randint(1, 99)}",
        "user2": f"{first.lower()}.{surname.lower()}{rng.randint(1, 9)}",
        "company": rng.choice(TR_COMPANIES), "relative": rng.choice(TR_RELATIVES),
        "language": rng.choice(TR_LANGUAGES), "hour": f"{rng.randint(1, 6)} pm",
        "km": str(rng.randint(8, 90)),
        "tracking": f"{rng.choice(['RX', 'LP', 'CT', 'JD'])}{rng.randint(10**8, 10**9 - 1)}GB",
        "time_future": rng.choice(["tomorrow", "this weekend", "next week", "on {weekday}",
                                   "until {date}", "between {date} and {date2}"]),
    }
    slots["place"] = rng.choice(TR_PLACES).format(**slots)
    slots["time_future"] = slots["time_future"].format(**slots)
    return slots


TR_CORES = {
    "billing": [
        "[I was|I've been|I got] charged {amount} twice for my {plan} [subscription|plan|membership] [this month|in {month}|on {date}].",
        "My [latest|most recent|{month}] invoice [shows|says|comes to] {amount}, but my {plan} plan [is supposed to|should] cost {amount2}[ a month| per month|].",
        "There is a charge of {amount} on my [card|bank statement|credit card statement] from {since} that I don't recognise.",
        "My [card|debit card|credit card] [keeps getting|is always] declined when [the monthly payment|the {plan} renewal|the payment for invoice {invoice}] is taken, [although|even though] [it's valid until {month}|the bank says nothing is wrong|there is money on it].",
        "How do I change the [card|payment card|bank account] you [bill|charge] [every month|for my {plan} plan|for our {seats} seats]?",
        "Could you add [our|my company's] VAT number, {vat}, to the invoice for order {order}?",
        "The price of my {plan} plan went up [from {amount2} |]to {amount} [without any notice|and nobody told me|with no warning at all].",
        "I need a [copy|PDF copy|duplicate] of the invoice for the {amount} payment I made {time}[ for our accountant| for my tax return|].",
        "Why am I being billed for the {plan} plan when I [signed up for|chose|only ever picked] {plan2}?",
        "I'd like to switch [from monthly to yearly billing|from yearly to monthly billing] on my {plan} plan[ before the renewal on {date}|].",
        "The payment for order {order} was taken from [the wrong bank account|my old card ending in {last4}|my {relative}'s card instead of mine].",
        "My receipt [for order {order}|from {since}] lists {amount2} in [tax|VAT|sales tax], which looks far too high for a {amount} [purchase|order].",
        "I was billed {amount} {time} even though my free trial [of {plan}|] should [still be running|run until {date}].",
        "Can the invoice for [order {order}|my {plan} plan|{invoice}] be addressed to [my employer|{company}|our company] instead of to me?",
        "Your direct debit was collected twice {time}, once for {amount} and once for {amount2}.",
        "Is there a way to pay [invoice {invoice}|for my {plan} plan|for order {order}] by [bank transfer|PayPal] instead of by card?",
        "The amount on my statement, {amount}, doesn't match the {amount2} shown at checkout for order {order}.",
        "We have {seats} users on the {plan} plan, but [invoice {invoice}|this month's invoice|the last invoice] charges us for {seats2}.",
        "Could you [explain|break down] the {small} [{fee}|line called '{fee}'] on invoice {invoice}?",
        "I was charged a late payment fee of {small} [even though|although] I paid [invoice {invoice}|my bill] on {date}.",
        "Please [move|change] my billing date from the {nth} to the {nth2} of the month[, since that's when I get paid|].",
        "The currency on my invoices changed from [euros|pounds|dollars] to [Swiss francs|Canadian dollars|US dollars] {time}[ without me asking|].",
        "Does the {amount} price of the {plan} plan include [VAT|tax|sales tax], or is that added on top?",
        "[Our finance team|My accountant|{name} in our finance team] needs every invoice from {month} onwards[ sent to {email}| in one PDF|].",
        "Why did my {plan} bill go from {amount2} to {amount} when we only added [one user|{name} as a user|a second seat] {time}?",
    ],
    "shipping": [
        "My {product} [still hasn't arrived|hasn't turned up yet|is nowhere to be seen] and it was [due|supposed to arrive|expected] {time}.",
        "The tracking for order {order} hasn't [updated|moved|changed] since {since}[ and still says '{status}'|].",
        "The courier says order {order} was delivered {time}, but nothing came to [my door|{place}|my letterbox].",
        "Can I change the delivery address for order {order} to {place}?",
        "Is [express|next-day|weekend|tracked] delivery available for the {product} I [just ordered|ordered {time}|have in my basket]?",
        "My parcel [with the {product}|for order {order}|] was left [with a neighbour I have never met|behind the bins|in the rain on the doorstep|at the wrong house on {street}].",
        "The delivery date for my {product} [keeps getting pushed back|has moved from {date} to {date2}|changed again {time}].",
        "The box with my {product} arrived [completely crushed|soaked through|torn open], though the item [looks okay|seems fine|itself is undamaged].",
        "Which courier [are you using for|is handling|will deliver] order {order}, and is there a tracking number?",
        "Do you deliver to {country}, and how long does [it usually take|shipping to {city} take] for {product_a}?",
        "Only [one|two] of the {n_boxes} boxes in order {order} arrived, and the rest [are missing|haven't shown up].",
        "Could the driver [bring|deliver] my {product} [in the afternoon|after {hour}] instead of [in the morning|during my working hours]?",
        "My {product} [seems to be stuck at customs in {country}|has been stuck at customs since {since}|has been stuck at customs for {n_days} days].",
        "The delivery note says my parcel went to {city2}, [but I live in {city}|which is nowhere near my address in {city}].",
        "I won't be home {time_future}, so can [the parcel|my {product}|order {order}] be held at [the depot|a pickup point|the post office]?",
        "The tracking link for my {product} [just shows|only opens] an error page [from the courier|on their site].",
        "Why was my {product} sent by standard post when I [chose|paid for] next-day delivery[ on order {order}|]?",
        "The [driver|courier] [left a card saying|sent a text saying] they tried to deliver {time}, but I was home [all day|the whole time].",
        "Order {order} [shows as|was marked] dispatched {time}, but there's no tracking number in the [email|confirmation].",
        "Can you split order {order} so the {product} ships now and the rest [follows later|comes when it's back in stock]?",
        "I need my {product} delivered to {place} by {date}[ for a birthday| for an event|]; is that still possible?",
        "The parcel with order {order} is waiting at [a pickup point|a parcel locker|the depot] in {city2}, which is {km} kilometres from me.",
        "[Your courier|The delivery van|The driver] has come {n_times} this week and [each time|every time] left [without the parcel|saying the address could not be found].",
        "Please deliver order {order} to the side door at {house} {street}, as the front [gate|entrance] is locked.",
        "I ordered the {product} with [two-day|express|next-day] shipping {time}, and it still hasn't left your warehouse.",
    ],
    "technical": [
        "{app} crashes every time I [open|go to|tap on] the {screen} [page|screen|tab][ on {os}|].",
        "My {device} won't connect to [Wi-Fi|my home network|the 5 GHz network|my phone] since the [latest|{version}] update.",
        "I keep getting error code {code} when I try to [upload a file|upload a photo|save my changes|open a report][ in {app}|].",
        "The website shows a blank [page|white screen] [right after|every time] I press the [checkout|search|save|next|pay now|sign-up] button[ in {browser}| on my {phone}| on {os}|].",
        "My {device} won't switch on even though it's [fully charged|been on the charger all night|plugged in].",
        "The firmware update for my {device} has been stuck at {pct} percent for [an hour|{n_hours} hours|most of the day].",
        "Bluetooth pairing [with|between my {phone} and] my {device} fails [every single time|after about {n_sec} seconds|with error {code}].",
        "Notifications from {app} stopped working {time}[ on my {phone}|].",
        "Data no longer syncs between {app} and my {device}[ since {since}|].",
        "Videos in {app} freeze after [a few seconds|{n_sec} seconds|about a minute] of playback[ on {os}|].",
        "The screen on my {device} [flickers|goes dark|turns green] whenever I [change the brightness|rotate it|open the camera].",
        "Exporting [a report|my {month} report|the weekly summary] from {app} to [PDF|CSV|Excel] produces an empty file.",
        "My {device} keeps restarting on its own every [few minutes|{n_min} minutes|time I open {app}].",
        "The search bar in {app} returns no results, even for [things I know exist|items I looked at {time}].",
        "Since {since} my {device} drains its battery in about {n_hours} hours[ instead of lasting all day|].",
        "{app} shows error {code} and then closes[ on my {phone}| as soon as it loads|].",
        "The voice commands on my {device} stopped responding {time}[, although the lights still come on|].",
        "I can't install version {version} of {app} on {os}; it [stops|freezes] at {pct} percent.",
        "The [video feed|live view] from my {device} [lags by|is delayed by] about {n_sec} seconds[ in {app}|].",
        "My {device} shows [a red light|a blinking orange light|a spinning icon] and won't respond to [any buttons|the app|anything I press].",
        "The [dark mode|language setting|font size] in {app} resets every time I [restart it|close it|update it].",
        "Uploads from {app} [fail|time out] whenever the file is bigger than {mb} MB.",
        "My {device} [loses|keeps losing] its connection to {app} [every evening|after {n_min} minutes|whenever my phone locks].",
        "The page in {browser} [freezes|keeps reloading] when I [scroll down the {screen} page|open the {screen} tab].",
        "After the {version} update, {app} [takes|needs] about {n_sec} seconds to open on my {phone}.",
    ],
    "account": [
        "I forgot my password and the reset [email|link] never arrives[, even after {n_tries} tries| at {email}|].",
        "How do I change the email address on my account from {email} to {email2}?",
        "My account was locked after [too many|{n_tries} failed] [sign-in|login] attempts[ {time}|].",
        "Please delete my account[, {email},| ({user})|] and [all the personal data you hold about me|every bit of personal data linked to it][ by {date}|].",
        "I want to change the username shown on my profile from {user} to {user2}.",
        "I somehow have two accounts[, one under {email} and one under {email2},|] and would like to merge them into one.",
        "I [lost|broke|replaced] my phone {time} and can't get the two-factor code to sign in.",
        "Someone changed my account password {time} without my permission[, and the email now shows {email2}|].",
        "Can I add my {relative} [{name2}|] as a second user on my account?",
        "How do I stop the [newsletter|marketing|weekly offers] emails [linked to|sent to] {email}?",
        "I'd like to [update|change] the phone number on my account[ from the one ending in {last4b}|] to [the new one|a new number] ending in {last4}.",
        "My profile still shows my old surname, {surname2}, even though I changed it {time}.",
        "Is it possible to transfer my account to [a colleague|{name2}|my replacement] who is taking over my role[ at {company}|]?",
        "I never received the link to verify my [new account|email address|new email address, {email},][ after signing up {time}| even though I asked for it {n_times}|].",
        "How can I [download|get|request] a copy of [the personal data|all the data|everything] [stored in my account|you've kept about me since {year}|linked to {email}]?",
        "My security questions were reset {time} and I can no longer answer them.",
        "I want to close my old account[, {email},|] but keep my order history[ from {year} onwards|].",
        "I'm still signed in on [{device_a}|a laptop|my old {phone}] that I [sold|gave away|no longer have]; can you sign me out of it?",
        "The sign-in page says {email} isn't registered, but I've had an account [since {year}|for {years} years].",
        "Please turn off two-factor authentication on my account [for now|until I get a new SIM]; I changed [numbers|phone providers] {time}.",
        "My profile lists my date of birth as {date} {birth_year}, which is wrong.",
        "I got an email saying someone signed in to my account from {city} {time}, and it wasn't me.",
        "I'd like to change the language of my account to {language}[ so my {relative} can use it too|].",
        "How do I remove my old address on {street} from my saved addresses?",
        "[My name|My first name] is spelled {name_typo} on my account instead of {name}; [can you fix it|how do I correct it]?",
    ],
    "refund": [
        "I returned the {product} {time} and still haven't [got my money back|received my refund|been refunded].",
        "I'd like my money back for the {product} because it stopped working after [a week|{n_days} days|two uses].",
        "Please cancel order {order} and return the full {amount} to me.",
        "The {product} [doesn't suit me|is smaller than I expected|isn't what I ordered], so I want to send it back [for a full refund|and get my {amount} back|and have the money returned to my card].",
        "You approved my return {time}, but the {amount} hasn't reached my account yet.",
        "I cancelled order {order} [within the 14-day window|the same day I placed it|{time}] and expect to be reimbursed[ the {amount}|].",
        "The {product} arrived broken and I want my money back rather than a replacement[ or a repair|].",
        "Can I get a partial refund since my {product} came without [its charger|its lid|the manual and the cable]?",
        "What is the status of the refund for order {order}[ that I asked for {time}|]?",
        "I was promised {amount} back for the {product} I sent back {time}.",
        "I no longer need the {product}; how do I return it and get [reimbursed|my {amount} back]?",
        "You gave me store credit[ of {amount}|], but I asked for the money to go back to my card.",
        "Only {amount2} of the {amount} I paid for the returned {product} has come back.",
        "The return label is printed and the {product} is packed, so when will I be reimbursed?",
        "I'd like to return the unopened {product} [from order {order}|] and have the payment reversed.",
        "The {product} was a duplicate order[ (order {order})|], so please take it back and pay me back.",
        "My refund for the {product} was sent to an old card [that is now closed|ending in {last4}, which I no longer have].",
        "I was charged {amount} for order {order} after I cancelled it {time}; please [refund it|refund the money|give me the money back].",
        "The {product} I bought for {amount} [was reduced|dropped] by {small} [the next day|a week later]; can I get the difference back?",
        "Your website says refunds take {n_days} days, and it's now been {n_days2}; where is my {amount}?",
        "Please refund the {small} delivery charge on order {order}, since it arrived {n_days} days late.",
        "I returned [two|three] items from order {order} but only got money back for [one of them|the {product}].",
        "The {product} I returned on {date} was [received|signed for] by your warehouse, so please [release|process] my refund.",
        "I want to cancel my {product} [pre-order|order] and get the {amount} deposit back.",
        "The {product} I gave my {relative} as a [gift|present] was returned, and the {amount} should come back to me.",
    ],
}

TR_CONTEXT = {
    "billing": [
        "I've attached a screenshot of my [bank statement|invoice|card statement][ from {month}|].",
        "This is the [second|third] month in a row that it has happened.",
        "Our finance team needs a corrected invoice by {weekday}.",
        "I only have the one [subscription|plan] with you[, the {plan} plan|].",
        "The charge appeared under a name I didn't recognise at first.",
        "Please confirm [which amount|how much] will be charged [next month|on {date}].",
        "My card [ends in|number ends with] {last4}[, if that helps|].",
        "Our company is {company}, [registered in {country}|based in {city}].",
    ],
    "shipping": [
        "The tracking page just says '{status}'[ and nothing else|].",
        "I need it before {weekday} because it's a [gift|birthday present|present for my {relative}].",
        "Nobody rang the bell, and there was no card through the door.",
        "I [checked with|asked] the neighbours [at number {house}|on both sides] and nobody has it.",
        "The estimated delivery has changed {n_times} already.",
        "I'm happy to collect it myself [from the depot in {city}|if that is quicker|on {weekday}].",
        "The courier's phone line just plays [a recorded message|music] and then hangs up.",
        "The tracking number is {tracking}.",
    ],
    "technical": [
        "I've already tried restarting it [twice|{n_times}|and unplugging it for {n_min} minutes].",
        "I'm using version {version} on [an Android phone|an iPhone|{os}].",
        "It worked perfectly until the [update|{version} update|update {time}].",
        "Reinstalling [it|the app|{app}] didn't make any difference.",
        "The same thing happens on my [laptop|tablet|work computer] and my phone.",
        "I cleared the cache as your help page suggested, with no luck.",
        "My internet connection is fine; every other device in the house works.",
        "The {device} is about {n_months} months old.",
    ],
    "account": [
        "I still have access to my old email address[, {email}|].",
        "I can confirm my identity with the last four digits of my card, {last4}.",
        "I've checked my [spam folder|spam and junk folders] as well.",
        "I'd rather not create a brand-new profile.",
        "The help page only tells me to sign in first, which I can't do.",
        "I'm the only person who should have access[ to this account|].",
        "My username is {user}[, if you need it|].",
        "I signed up with {email} back in {year}.",
    ],
    "refund": [
        "The item is still in its original packaging[ with all the tags|].",
        "I have the return receipt from the post office[, dated {date}|].",
        "It has now been more than {n_days} working days.",
        "I paid with a [debit|credit] card ending in {last4}[, if that matters|].",
        "I don't want a [voucher|replacement] or an exchange.",
        "The courier confirmed that you received the return {time}.",
        "The return tracking number is {tracking}.",
        "My order number was {order2}[, in case you need it|].",
    ],
}

# Sentences that mention words typical of other classes without changing the topic.
TR_INCIDENTAL = {
    "billing": [
        "The parcel itself arrived fine, so this is only about the charge.",
        "I can log in without problems; it's just the invoice that is wrong.",
        "I'm not asking for a refund, I just want the charge explained.",
        "The app works well, I have no complaints about that.",
    ],
    "shipping": [
        "The payment went through without any issue.",
        "I don't want a refund, I just want the parcel.",
        "My account shows the order as paid and dispatched.",
        "The invoice arrived by email, but the goods did not.",
    ],
    "technical": [
        "My account details are all correct and my subscription is paid.",
        "The device was delivered quickly, so no complaints there.",
        "I'm not after a refund, I just want it to work.",
        "I can sign in fine, the problem starts after that.",
    ],
    "account": [
        "The app itself works fine on my phone.",
        "My last invoice was correct, so billing isn't the issue.",
        "I don't have any open orders at the moment.",
        "I'm not looking for a refund or anything like that.",
    ],
    "refund": [
        "The delivery was quick, but the item isn't what I need.",
        "I tried a reset as the manual suggests, but it didn't help.",
        "Please send the money to the same card I paid with.",
        "I can log in to my account and see the return as received.",
    ],
}

TR_GENERIC = [
    "I've been a customer for {years} years.",
    "This is quite urgent for me[ as I'm away from {date}|].",
    "I contacted you {time} but haven't heard back[; my ticket number is {ticket}|].",
    "My customer number is {custno}.",
    "I'd prefer an answer by [email|phone].",
]

TR_GREETINGS = [
    "Hi.", "Hello.", "Hi there.", "Good morning.", "Good afternoon.", "Good evening.",
    "Hello team.", "Hello support.", "Hey.", "Hi, {name} here.", "Hello, this is {name}.",
    "Hi, this is {name} {surname}.",
]

TR_CLOSINGS = [
    "Thanks.", "Thank you.", "Thanks in advance.", "Please help.", "Could you look into this?",
    "I'd appreciate a quick reply.", "Please let me know what to do.", "Many thanks.",
    "What are my options?", "Kind regards.", "Thanks, {name}.", "Best wishes, {name}.",
    "Regards, {name} {surname}.", "Thanks for your help.",
]

_TR_ALT = re.compile(r"\[([^\[\]]*)\]")


def _tr_expand(rng: random.Random, template: str, slots: dict[str, str]) -> str:
    """Resolve [a|b] choices (innermost first), fill {slots}, tidy spaces, capitalise."""
    text = template
    while True:
        m = _TR_ALT.search(text)
        if not m:
            break
        text = text[:m.start()] + rng.choice(m.group(1).split("|")) + text[m.end():]
    text = " ".join(text.format(**slots).split())
    return cap_first(text)


def _tr_message(rng: random.Random, label: str) -> str:
    slots = _tr_slots(rng)
    slots["device_a"] = f"{article(slots['device'])} {slots['device']}"
    parts = []
    if rng.random() < 0.35:
        parts.append(rng.choice(TR_GREETINGS))
    parts.append(rng.choice(TR_CORES[label]))
    r = rng.random()
    if r < 0.30:
        parts.append(rng.choice(TR_CONTEXT[label]))
    elif r < 0.55:
        parts.append(rng.choice(TR_INCIDENTAL[label]))
    elif r < 0.70:
        parts.append(rng.choice(TR_GENERIC))
    if len(parts) < 3 and rng.random() < 0.5:
        parts.append(rng.choice(TR_CLOSINGS))
    return " ".join(_tr_expand(rng, p, slots) for p in parts[:3])


def build_ticket_routing(rng: random.Random, per_label: int = 160) -> list[dict]:
    """Labels take turns, so each label draws from the same pool of not-yet-used wording; a
    candidate that is an exact or near duplicate of a kept message is drawn again."""
    rows: list[dict] = []
    guard = NearDuplicateGuard()
    tries = 0
    for _ in range(per_label):
        for label in TICKET_LABELS:
            while True:
                tries += 1
                if tries > 100_000:
                    raise RuntimeError("cannot make enough distinct ticket messages")
                msg = _tr_message(rng, label)
                if 10 <= len(msg.split()) <= 45 and guard.admit(msg):
                    break
            rows.append({"label": label, "message": msg})
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------------
# 2. order_extraction
# --------------------------------------------------------------------------------------------

# (singular, plural)
OE_ITEMS = [
    ("mug", "mugs"), ("notebook", "notebooks"), ("backpack", "backpacks"),
    ("umbrella", "umbrellas"), ("water bottle", "water bottles"), ("desk lamp", "desk lamps"),
    ("chair", "chairs"), ("cushion", "cushions"), ("towel", "towels"), ("blanket", "blankets"),
    ("t-shirt", "t-shirts"), ("scarf", "scarves"), ("hoodie", "hoodies"), ("cap", "caps"),
    ("jacket", "jackets"), ("teapot", "teapots"), ("bowl", "bowls"), ("plate", "plates"),
    ("vase", "vases"), ("candle", "candles"), ("pencil case", "pencil cases"),
    ("folder", "folders"), ("stapler", "staplers"), ("keyboard", "keyboards"),
    ("mouse pad", "mouse pads"), ("phone case", "phone cases"), ("tote bag", "tote bags"),
    ("suitcase", "suitcases"), ("bike helmet", "bike helmets"), ("yoga mat", "yoga mats"),
    ("lunch box", "lunch boxes"), ("storage box", "storage boxes"), ("knife", "knives"),
    ("shelf", "shelves"), ("rug", "rugs"), ("apron", "aprons"), ("wall clock", "wall clocks"),
    ("picture frame", "picture frames"), ("pillow", "pillows"), ("bucket", "buckets"),
    ("watering can", "watering cans"), ("flower pot", "flower pots"), ("kettle", "kettles"),
    ("toaster", "toasters"), ("paintbrush", "paintbrushes"), ("wristwatch", "wristwatches"),
]
OE_COLORS = [
    "red", "blue", "green", "black", "white", "yellow", "orange", "purple", "pink", "grey",
    "brown", "navy", "teal", "silver", "beige",
]
OE_CITIES = [
    "Leeds", "Bristol", "Glasgow", "Cardiff", "Belfast", "Dublin", "Cork", "Lyon", "Marseille",
    "Lille", "Porto", "Lisbon", "Seville", "Valencia", "Bilbao", "Turin", "Bologna", "Naples",
    "Munich", "Hamburg", "Cologne", "Leipzig", "Vienna", "Graz", "Zurich", "Geneva", "Antwerp",
    "Ghent", "Rotterdam", "Utrecht", "Aarhus", "Bergen", "Oslo", "Helsinki", "Tallinn", "Riga",
    "Krakow", "Gdansk", "Prague", "Brno", "Budapest", "Zagreb", "Denver", "Austin", "Seattle",
    "Boston", "Chicago", "Portland", "Toronto", "Montreal", "Vancouver", "Calgary", "Perth",
    "Auckland", "Osaka", "Nagoya", "Busan", "Pune", "Nairobi", "Accra", "San Diego",
    "Cape Town",
]

# {np}: quantity + color + noun; {np_nc}: quantity + noun (color given elsewhere);
# {pron}: it/them; {city}: the city.
OE_TEMPLATES = [
    "Could you send {np} to our office in {city}?",
    "Please ship {np} to {city}.",
    "I'd like to order {np}, delivered to {city}.",
    "We need {np_nc} in {color} for the {city} store.",
    "Please deliver {np} to {city}.",
    "For our team in {city}, please order {np_nc}, all in {color}.",
    "Can I get {np} sent to {city}?",
    "Put me down for {np_nc} in {color}, shipping to {city}.",
    "Our {city} branch wants {np}.",
    "Send {np} over to the {city} warehouse.",
    "Please arrange {np} for delivery in {city}.",
    "Ship to {city}: {np}.",
    "I want {np_nc} in {color}. Please send {pron} to {city}.",
    "Add {np} to my order and send {pron} to {city}.",
    "We're based in {city} and need {np}.",
    "A customer in {city} asked for {np}; please dispatch {pron} today.",
    "Requesting {np} for the {city} site.",
    "We need {np} in {city} by next week.",
    "Can you get {np_nc} to {city}? Make {pron} {color}.",
    "Order for {city}: {np}.",
    "I'm ordering {np} to be shipped to {city}.",
    "The {city} office has asked for {np}.",
    "Deliver {np_nc} to {city}, and the color should be {color}.",
    "My address is in {city}, and I would like {np}.",
    "Could {np} be delivered to {city} this week?",
    "To {city}, please: {np}.",
    "We'd like {np_nc} for our shop in {city}; {color} would be perfect.",
    "Is it possible to ship {np} to {city}?",
    "Book {np} for our client in {city}.",
    "In {city} we are short of {plural}, so please send {np}.",
]
OE_PREFIXES = ["", "", "", "", "Hi! ", "Hello, ", "Good morning. ", "Quick request. ",
               "Hi team, ", "Hello there. "]
OE_SUFFIXES = ["", "", "", "", " Thank you!", " Thanks in advance.", " Much appreciated.",
               " Thanks.", " Cheers."]


def _oe_quantity(rng: random.Random, qty: int) -> str:
    """How the sentence writes the quantity (digits, words, 'a dozen', 'a single')."""
    r = rng.random()
    if qty == 12 and r < 0.5:
        return "a dozen"
    if qty == 6 and r < 0.4:
        return "half a dozen"
    if qty == 24 and r < 0.4:
        return "two dozen"
    if qty == 1:
        return rng.choice(["a", "one", "1", "a single"])
    if qty <= 20 and r < 0.45:
        return number_words(qty)
    if r < 0.15:
        return number_words(qty)
    return str(qty)


def _oe_np(qword: str, color: str | None, noun: str) -> str:
    words = ([color] if color else []) + [noun]
    phrase = " ".join(words)
    if qword == "a":
        return f"{article(phrase)} {phrase}"
    if qword == "a single":
        return f"a single {phrase}"
    return f"{qword} {phrase}"


def _oe_row(rng: random.Random) -> dict:
    sing, plur = rng.choice(OE_ITEMS)
    color = rng.choice(OE_COLORS)
    city = rng.choice(OE_CITIES)
    # quantities 1-50, with small numbers a bit more common (as in real orders)
    qty = rng.randint(1, 12) if rng.random() < 0.5 else rng.randint(1, 50)
    qword = _oe_quantity(rng, qty)
    noun = sing if qty == 1 else plur
    template = rng.choice(OE_TEMPLATES)
    text = template.format(
        np=_oe_np(qword, color, noun), np_nc=_oe_np(qword, None, noun), color=color, city=city,
        pron="it" if qty == 1 else "them", plural=plur,
    )
    prefix = rng.choice(OE_PREFIXES)
    if prefix.endswith(", ") and not re.match(r"I\b", text):
        text = text[:1].lower() + text[1:]  # no template starts with a city name
    text = prefix + text
    text = cap_first(text) + rng.choice(OE_SUFFIXES)
    target = f"item={sing}; qty={qty}; color={color}; city={city}"
    return {"target": target, "text": text}


def build_order_extraction(rng: random.Random, n: int = 800) -> list[dict]:
    """A candidate whose text is an exact or near duplicate of a kept text is drawn again."""
    rows: list[dict] = []
    guard = NearDuplicateGuard()
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > 100_000:
            raise RuntimeError("cannot make enough distinct order texts")
        row = _oe_row(rng)
        if guard.admit(row["text"]):
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# 3. capitals (held-out probe)
# --------------------------------------------------------------------------------------------

# (country as used in a sentence, capital, extra accepted spellings)
CAPITALS = [
    ("France", "Paris", []), ("Germany", "Berlin", []), ("Italy", "Rome", []),
    ("Spain", "Madrid", []), ("Portugal", "Lisbon", []), ("the United Kingdom", "London", []),
    ("Ireland", "Dublin", []), ("Belgium", "Brussels", []), ("Austria", "Vienna", []),
    ("Poland", "Warsaw", []), ("the Czech Republic", "Prague", []),
    ("Slovakia", "Bratislava", []), ("Hungary", "Budapest", []), ("Romania", "Bucharest", []),
    ("Bulgaria", "Sofia", []), ("Greece", "Athens", []), ("Croatia", "Zagreb", []),
    ("Slovenia", "Ljubljana", []), ("Serbia", "Belgrade", []),
    ("Bosnia and Herzegovina", "Sarajevo", []), ("North Macedonia", "Skopje", []),
    ("Albania", "Tirana", []), ("Montenegro", "Podgorica", []), ("Denmark", "Copenhagen", []),
    ("Norway", "Oslo", []), ("Sweden", "Stockholm", []), ("Finland", "Helsinki", []),
    ("Iceland", "Reykjavik", ["Reykjavík"]), ("Estonia", "Tallinn", []), ("Latvia", "Riga", []),
    ("Lithuania", "Vilnius", []), ("Ukraine", "Kyiv", ["Kiev"]), ("Belarus", "Minsk", []),
    ("Moldova", "Chisinau", ["Chișinău", "Kishinev"]), ("Russia", "Moscow", []),
    ("Malta", "Valletta", []), ("Liechtenstein", "Vaduz", []),
    ("Andorra", "Andorra la Vella", []), ("Japan", "Tokyo", []), ("China", "Beijing", ["Peking"]),
    ("South Korea", "Seoul", []), ("North Korea", "Pyongyang", []),
    ("Mongolia", "Ulaanbaatar", ["Ulan Bator"]), ("India", "New Delhi", []),
    ("Pakistan", "Islamabad", []), ("Bangladesh", "Dhaka", []), ("Nepal", "Kathmandu", []),
    ("Bhutan", "Thimphu", []), ("Afghanistan", "Kabul", []), ("Iran", "Tehran", ["Teheran"]),
    ("Iraq", "Baghdad", []), ("Syria", "Damascus", []), ("Jordan", "Amman", []),
    ("Lebanon", "Beirut", []), ("Saudi Arabia", "Riyadh", []),
    ("the United Arab Emirates", "Abu Dhabi", []), ("Qatar", "Doha", []),
    ("Kuwait", "Kuwait City", []), ("Oman", "Muscat", []), ("Bahrain", "Manama", []),
    ("Turkey", "Ankara", []), ("Georgia", "Tbilisi", []), ("Armenia", "Yerevan", []),
    ("Azerbaijan", "Baku", []), ("Uzbekistan", "Tashkent", []),
    ("Kyrgyzstan", "Bishkek", []), ("Tajikistan", "Dushanbe", []),
    ("Thailand", "Bangkok", []), ("Vietnam", "Hanoi", []), ("Laos", "Vientiane", []),
    ("Cambodia", "Phnom Penh", []), ("the Philippines", "Manila", []),
    ("Malaysia", "Kuala Lumpur", []), ("Egypt", "Cairo", []), ("Morocco", "Rabat", []),
    ("Algeria", "Algiers", []), ("Tunisia", "Tunis", []), ("Libya", "Tripoli", []),
    ("Sudan", "Khartoum", []), ("Ethiopia", "Addis Ababa", []), ("Kenya", "Nairobi", []),
    ("Uganda", "Kampala", []), ("Rwanda", "Kigali", []), ("Nigeria", "Abuja", []),
    ("Ghana", "Accra", []), ("Senegal", "Dakar", []), ("Mali", "Bamako", []),
    ("Niger", "Niamey", []), ("Cameroon", "Yaoundé", ["Yaounde"]), ("Gabon", "Libreville", []),
    ("Angola", "Luanda", []), ("Zambia", "Lusaka", []), ("Zimbabwe", "Harare", []),
    ("Mozambique", "Maputo", []), ("Madagascar", "Antananarivo", []),
    ("Namibia", "Windhoek", []), ("Botswana", "Gaborone", []), ("Somalia", "Mogadishu", []),
    ("the Democratic Republic of the Congo", "Kinshasa", []), ("Guinea", "Conakry", []),
    ("Sierra Leone", "Freetown", []), ("Liberia", "Monrovia", []),
    ("Burkina Faso", "Ouagadougou", []), ("Malawi", "Lilongwe", []),
    ("the United States", "Washington, D.C.", ["Washington", "Washington DC"]),
    ("Canada", "Ottawa", []), ("Mexico", "Mexico City", []), ("Cuba", "Havana", []),
    ("Jamaica", "Kingston", []), ("Haiti", "Port-au-Prince", []),
    ("the Dominican Republic", "Santo Domingo", []), ("Honduras", "Tegucigalpa", []),
    ("Nicaragua", "Managua", []), ("Costa Rica", "San José", ["San Jose"]),
    ("Colombia", "Bogotá", ["Bogota"]), ("Venezuela", "Caracas", []), ("Ecuador", "Quito", []),
    ("Peru", "Lima", []), ("Brazil", "Brasília", ["Brasilia"]),
    ("Argentina", "Buenos Aires", []), ("Chile", "Santiago", []),
    ("Uruguay", "Montevideo", []), ("Paraguay", "Asunción", ["Asuncion"]),
    ("Australia", "Canberra", []), ("New Zealand", "Wellington", []), ("Fiji", "Suva", []),
    ("Papua New Guinea", "Port Moresby", []),
]

CAPITAL_PHRASINGS = [
    "What is the capital of {c}?",
    "What is the capital city of {c}?",
    "Name the capital of {c}.",
    "Which city is the capital of {c}?",
    "What city is the capital of {c}?",
]


def build_capitals(rng: random.Random) -> list[dict]:
    rows = []
    for country, capital, extra in CAPITALS:
        question = cap_first(rng.choice(CAPITAL_PHRASINGS).format(c=country))
        rows.append({"aliases": [capital] + extra, "answer": capital, "question": question})
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------------
# 5. word_opposites (held-out probe)
# --------------------------------------------------------------------------------------------

# word -> accepted opposites (first one is the answer)
OPPOSITES = [
    ("hot", ["cold", "chilly", "cool"]), ("big", ["small", "little", "tiny"]),
    ("tall", ["short"]), ("up", ["down"]), ("open", ["closed", "shut"]),
    ("fast", ["slow"]), ("happy", ["sad", "unhappy"]), ("heavy", ["light"]),
    ("day", ["night"]), ("black", ["white"]), ("early", ["late"]), ("empty", ["full"]),
    ("wet", ["dry"]), ("hard", ["soft", "easy"]), ("old", ["new", "young"]),
    ("rich", ["poor"]), ("loud", ["quiet", "soft", "silent"]), ("strong", ["weak"]),
    ("thick", ["thin"]), ("win", ["lose"]), ("buy", ["sell"]), ("push", ["pull"]),
    ("above", ["below", "beneath", "under"]), ("inside", ["outside"]), ("left", ["right"]),
    ("love", ["hate"]), ("clean", ["dirty"]), ("true", ["false", "untrue"]),
    ("begin", ["end", "finish", "stop"]), ("first", ["last"]), ("alive", ["dead"]),
    ("awake", ["asleep"]), ("cheap", ["expensive", "costly", "dear"]),
    ("deep", ["shallow"]), ("wide", ["narrow"]), ("near", ["far", "distant"]),
    ("sweet", ["sour", "bitter", "salty"]), ("smooth", ["rough", "bumpy"]),
    ("brave", ["cowardly", "afraid", "scared", "fearful"]), ("friend", ["enemy", "foe"]),
    ("question", ["answer", "reply"]), ("arrive", ["leave", "depart"]),
    ("remember", ["forget"]), ("give", ["take", "receive"]), ("accept", ["reject", "refuse"]),
    ("always", ["never"]), ("before", ["after"]), ("north", ["south"]), ("east", ["west"]),
    ("summer", ["winter"]), ("sunrise", ["sunset"]), ("top", ["bottom"]),
    ("front", ["back", "rear"]), ("polite", ["rude", "impolite"]),
    ("safe", ["dangerous", "unsafe"]), ("simple", ["complicated", "complex", "difficult"]),
    ("success", ["failure"]), ("victory", ["defeat", "loss"]), ("maximum", ["minimum"]),
    ("increase", ["decrease", "reduce"]), ("entrance", ["exit"]), ("import", ["export"]),
    ("ancient", ["modern", "new"]), ("tight", ["loose"]), ("sharp", ["blunt", "dull"]),
    ("bright", ["dark", "dim", "dull"]), ("generous", ["mean", "selfish", "stingy"]),
    ("guilty", ["innocent"]), ("public", ["private"]), ("temporary", ["permanent"]),
    ("borrow", ["lend"]), ("laugh", ["cry"]), ("float", ["sink"]),
    ("freeze", ["melt", "thaw", "boil"]), ("shout", ["whisper"]),
    ("hello", ["goodbye", "bye"]), ("yes", ["no"]), ("many", ["few"]), ("all", ["none"]),
    ("often", ["rarely", "seldom", "never"]), ("together", ["apart", "separately"]),
    ("visible", ["invisible"]), ("possible", ["impossible"]), ("legal", ["illegal"]),
    ("honest", ["dishonest"]), ("patient", ["impatient"]),
    ("correct", ["incorrect", "wrong"]), ("agree", ["disagree"]),
    ("appear", ["disappear", "vanish"]), ("include", ["exclude"]), ("best", ["worst"]),
    ("better", ["worse"]), ("beautiful", ["ugly"]), ("wild", ["tame"]),
    ("fat", ["thin", "slim", "skinny"]), ("young", ["old", "elderly"]),
    ("mother", ["father"]), ("king", ["queen"]), ("boy", ["girl"]), ("husband", ["wife"]),
    ("positive", ["negative"]), ("inhale", ["exhale"]), ("arrival", ["departure"]),
    ("come", ["go", "leave"]), ("lost", ["found", "won"]), ("healthy", ["sick", "ill", "unhealthy"]),
    ("asleep", ["awake"]), ("sit", ["stand"]),
]

OPPOSITE_PHRASINGS = [
    "What is the opposite of {w}?",
    "What is the opposite of the word '{w}'?",
    "Give the opposite of {w}.",
    "What word means the opposite of {w}?",
    "Tell me the opposite of '{w}'.",
]


def build_word_opposites(rng: random.Random) -> list[dict]:
    rows = []
    for word, opposites in OPPOSITES:
        question = rng.choice(OPPOSITE_PHRASINGS).format(w=word)
        rows.append({"aliases": list(opposites), "answer": opposites[0], "question": question})
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------------
# 4. everyday_mc (held-out probe)
# --------------------------------------------------------------------------------------------

# name -> (phrase with article, bare noun, members, categories it must not take distractors from)
MC_CATEGORIES = {
    "fruit": ("a fruit", "fruit", ["apple", "banana", "cherry", "grape", "mango", "pear", "peach",
                                   "plum", "strawberry", "pineapple", "lemon", "watermelon"], ["color"]),
    "vegetable": ("a vegetable", "vegetable", ["carrot", "potato", "onion", "cabbage", "broccoli",
                                               "spinach", "lettuce", "celery", "cauliflower",
                                               "leek"], []),
    "bird": ("a bird", "bird", ["sparrow", "eagle", "owl", "parrot", "pigeon", "robin", "swan",
                                "crow", "seagull", "duck"], []),
    "fish": ("a fish", "fish", ["salmon", "trout", "tuna", "cod", "goldfish", "herring", "sardine",
                                "mackerel"], []),
    "insect": ("an insect", "insect", ["ant", "bee", "butterfly", "beetle", "mosquito",
                                       "grasshopper", "ladybug", "wasp", "moth"], []),
    "mammal": ("a mammal", "mammal", ["cow", "horse", "sheep", "goat", "pig", "dog", "cat",
                                      "rabbit", "lion", "elephant", "tiger", "bear", "monkey",
                                      "zebra"], []),
    "tool": ("a tool", "tool", ["hammer", "screwdriver", "wrench", "saw", "drill", "pliers",
                                "shovel", "chisel"], ["kitchen utensil"]),
    "furniture": ("a piece of furniture", "piece of furniture",
                  ["sofa", "chair", "table", "bed", "wardrobe", "bookshelf", "desk", "stool"], []),
    "instrument": ("a musical instrument", "musical instrument",
                   ["piano", "guitar", "violin", "drum", "flute", "trumpet", "harp", "cello",
                    "saxophone"], []),
    "vehicle": ("a vehicle", "vehicle", ["car", "bus", "bicycle", "truck", "train", "motorcycle",
                                         "tractor", "van", "tram"], []),
    "clothing": ("a piece of clothing", "piece of clothing",
                 ["shirt", "jacket", "skirt", "sweater", "coat", "dress", "scarf", "sock",
                  "jeans"], []),
    "color": ("a color", "color", ["red", "blue", "green", "yellow", "purple", "orange", "pink",
                                   "brown", "black", "white", "grey"],
              ["fruit", "flower", "metal", "dairy product", "fish", "drink"]),
    "body part": ("a part of the body", "part of the body",
                  ["elbow", "knee", "shoulder", "ankle", "wrist", "finger", "nose", "chin",
                   "thumb", "heel"], []),
    "drink": ("a drink", "drink", ["tea", "coffee", "milk", "juice", "lemonade", "cocoa"],
              ["dairy product"]),
    "sport": ("a sport", "sport", ["football", "tennis", "basketball", "swimming", "golf",
                                   "rugby", "volleyball", "hockey", "skiing", "baseball"], []),
    "kitchen utensil": ("a kitchen utensil", "kitchen utensil",
                        ["spatula", "whisk", "ladle", "colander", "peeler", "rolling pin",
                         "grater", "tongs"], ["tool"]),
    "tree": ("a tree", "tree", ["oak", "pine", "maple", "birch", "willow", "beech", "cedar",
                                "elm"], []),
    "flower": ("a flower", "flower", ["rose", "tulip", "daisy", "lily", "sunflower", "orchid",
                                      "daffodil", "poppy"], []),
    "shape": ("a shape", "shape", ["circle", "square", "triangle", "rectangle", "oval",
                                   "hexagon", "pentagon"], []),
    "weather": ("a type of weather", "type of weather",
                ["rain", "snow", "fog", "hail", "thunder", "drizzle", "sleet"], []),
    "planet": ("a planet", "planet", ["Mars", "Venus", "Jupiter", "Saturn", "Mercury", "Neptune",
                                      "Uranus"], []),
    "metal": ("a metal", "metal", ["iron", "copper", "gold", "tin", "zinc", "nickel",
                                   "aluminium"], []),
    "dairy product": ("a dairy product", "dairy product", ["cheese", "butter", "yogurt", "cream"],
                      ["drink"]),
    "room": ("a room in a house", "room in a house",
             ["kitchen", "bedroom", "bathroom", "attic", "hallway", "basement", "living room"], []),
    "job": ("a job", "job", ["teacher", "doctor", "farmer", "pilot", "baker", "nurse", "plumber",
                             "chef", "dentist", "carpenter"], []),
    "feeling": ("a feeling", "feeling", ["joy", "anger", "fear", "sadness", "surprise",
                                         "jealousy", "pride"], []),
    "number": ("a number", "number", ["seven", "twelve", "three", "twenty", "nine", "fifteen",
                                      "forty", "eleven"], []),
    "month": ("a month", "month", ["January", "March", "July", "October", "December", "April",
                                   "August", "June"], []),
    "weekday": ("a day of the week", "day of the week",
                ["Monday", "Tuesday", "Friday", "Sunday", "Wednesday", "Saturday", "Thursday"], []),
    "language": ("a language", "language", ["French", "Spanish", "German", "Japanese", "Italian",
                                            "Arabic", "Hindi"], []),
    "continent": ("a continent", "continent", ["Africa", "Asia", "Europe", "Antarctica",
                                               "South America", "North America"], []),
}
MC_CREATURES = ["bird", "fish", "insect", "mammal"]
MC_CATEGORIES["animal"] = (
    "an animal", "animal",
    [m for name in MC_CREATURES for m in MC_CATEGORIES[name][2]], list(MC_CREATURES),
)
MC_CATEGORY_PHRASINGS = [
    "Which of these is {a}?",
    "Which one of these is {a}?",
    "Which of the following is {a}?",
    "Which word names {a}?",
    "Which option is {a}?",
    "Pick the {bare} from this list.",
]

# (task, answer, group): "What do you use to {task}?"; answers of the same group are never
# distractors for each other.
MC_USES = [
    ("cut paper", "scissors", "cut"), ("write a letter by hand", "a pen", "write"),
    ("dig a hole in the garden", "a shovel", "dig"), ("drive a nail into wood", "a hammer", "hit"),
    ("sweep the floor", "a broom", "sweep"), ("boil water for tea", "a kettle", "heat"),
    ("brush your teeth", "a toothbrush", "wash"), ("comb your hair", "a comb", "hair"),
    ("take a photo", "a camera", "photo"), ("open a locked door", "a key", "lock"),
    ("tell the time", "a clock", "time"), ("eat soup", "a spoon", "eat"),
    ("see in the dark", "a flashlight", "light"), ("dry off after a shower", "a towel", "dry"),
    ("stay dry in the rain", "an umbrella", "rain"), ("sew on a button", "a needle", "sew"),
    ("measure the length of a table", "a ruler", "measure"),
    ("stick two pieces of paper together", "glue", "stick"),
    ("wash your hands", "soap", "wash"), ("fry an egg", "a frying pan", "heat"),
    ("water the plants", "a watering can", "water"), ("turn a screw", "a screwdriver", "turn"),
    ("rub out a pencil mark", "an eraser", "erase"),
    ("carry your books to school", "a backpack", "carry"),
    ("look at your own reflection", "a mirror", "mirror"),
    ("wake up on time in the morning", "an alarm clock", "time"),
    ("cool a room on a hot day", "a fan", "cool"),
    ("keep your hands warm in winter", "gloves", "warm"), ("cut the grass", "a lawnmower", "cut"),
    ("smooth out a wrinkled shirt", "an iron", "iron"),
    ("lock your bicycle to a post", "a bike lock", "lock"), ("peel a potato", "a peeler", "cut"),
    ("read the news on paper", "a newspaper", "read"),
    ("climb up to a high shelf", "a ladder", "climb"),
    ("hang up a coat", "a coat hook", "hang"), ("pay for groceries", "money", "pay"),
]
MC_USE_PHRASINGS = ["What do you use to {t}?", "Which item would you use to {t}?",
                    "What would you need to {t}?"]

MC_PLACES = [
    ("Where do you keep food cold?", "a fridge", "cold"),
    ("Where do you go to borrow books?", "a library", "books"),
    ("Where do you buy fresh bread?", "a bakery", "shop"),
    ("Where do planes take off and land?", "an airport", "travel"),
    ("Where do you go when you are badly hurt?", "a hospital", "medical"),
    ("Where do children go to learn to read?", "a school", "school"),
    ("Where can you see lions and giraffes in a city?", "a zoo", "zoo"),
    ("Where do you wash dirty clothes?", "a washing machine", "wash"),
    ("Where do people go to watch a new film on a big screen?", "a cinema", "cinema"),
    ("Where do you catch a train?", "a station", "travel"),
    ("Where do most people sleep at night?", "a bed", "sleep"),
    ("Where do you take a bath?", "a bathtub", "wash"),
    ("Where do you park a car at home?", "a garage", "garage"),
    ("Where do you post a parcel?", "a post office", "post"),
    ("Where do you keep your savings safe?", "a bank", "bank"),
    ("Where do you buy medicine?", "a pharmacy", "medical"),
    ("Where do bees make honey?", "a hive", "animal home"),
    ("Where does a bird lay its eggs?", "a nest", "animal home"),
    ("Where do you bake a cake?", "an oven", "heat"),
    ("Where do you throw away rubbish?", "a bin", "bin"),
    ("Where do you grow vegetables at home?", "a garden", "garden"),
    ("Where do you hang your clothes in a bedroom?", "a wardrobe", "wardrobe"),
    ("Where do farmers keep cows in winter?", "a barn", "animal home"),
    ("Where do you buy groceries for the week?", "a supermarket", "shop"),
    ("Where do you go to swim indoors?", "a swimming pool", "pool"),
]

# (subject, color, colors that must not be distractors)
MC_COLORS = [
    ("the sky on a clear day", "blue", []), ("fresh grass", "green", []),
    ("fresh snow", "white", ["grey"]), ("a ripe banana", "yellow", ["green", "brown"]),
    ("coal", "black", ["grey"]), ("a ripe strawberry", "red", ["pink"]),
    ("milk", "white", []), ("a carrot", "orange", []), ("milk chocolate", "brown", []),
    ("a lemon", "yellow", ["green"]), ("an elephant", "grey", ["brown"]),
    ("a crow", "black", ["grey"]), ("a pumpkin", "orange", ["yellow"]),
    ("a lime", "green", ["yellow"]), ("a polar bear's fur", "white", ["grey"]),
    ("a ripe tomato", "red", []), ("a flamingo", "pink", ["red", "orange"]),
    ("an aubergine", "purple", ["black"]), ("tree bark", "brown", ["grey", "black"]),
    ("blood", "red", []), ("a lump of butter", "yellow", ["white"]),
    ("the yolk of an egg", "yellow", ["orange"]),
]
MC_ALL_COLORS = ["red", "blue", "green", "yellow", "white", "black", "orange", "brown", "grey",
                 "purple", "pink"]

MC_SOUNDS = [
    ("Which animal says 'moo'?", "a cow"), ("Which animal barks?", "a dog"),
    ("Which animal meows?", "a cat"), ("Which animal says 'oink'?", "a pig"),
    ("Which animal says 'baa'?", "a sheep"), ("Which animal neighs?", "a horse"),
    ("Which animal quacks?", "a duck"), ("Which animal hoots at night?", "an owl"),
    ("Which animal roars?", "a lion"), ("Which insect buzzes and makes honey?", "a bee"),
    ("Which animal hisses and has no legs?", "a snake"), ("Which bird clucks?", "a hen"),
    ("Which animal croaks by a pond?", "a frog"),
]

MC_JOBS = [
    ("Who puts out fires?", "a firefighter", "safety"),
    ("Who treats sick people in a hospital?", "a doctor", "medical"),
    ("Who teaches children at school?", "a teacher", "school"),
    ("Who flies a plane?", "a pilot", "drive"),
    ("Who cuts people's hair?", "a hairdresser", "hair"),
    ("Who delivers letters to your house?", "a postman", "post"),
    ("Who fixes teeth?", "a dentist", "medical"),
    ("Who cooks meals in a restaurant?", "a chef", "food"),
    ("Who grows crops on a farm?", "a farmer", "farm"),
    ("Who fixes leaking pipes?", "a plumber", "build"),
    ("Who bakes bread for a living?", "a baker", "food"),
    ("Who builds wooden furniture?", "a carpenter", "build"),
    ("Who catches criminals?", "a police officer", "safety"),
    ("Who looks after sick pets?", "a vet", "medical"),
    ("Who drives a bus?", "a bus driver", "drive"),
    ("Who writes books?", "an author", "books"),
    ("Who looks after the books in a library?", "a librarian", "books"),
    ("Who paints pictures?", "an artist", "art"),
]

MC_BODY = [
    ("Which part of the body do you use to see?", "the eyes", "eyes"),
    ("Which part of the body do you use to hear?", "the ears", "ears"),
    ("Which part of the body do you use to smell?", "the nose", "breathe"),
    ("Which part of the body do you use to taste food?", "the tongue", "mouth"),
    ("Which part of the body do you use to chew food?", "the teeth", "mouth"),
    ("Which part of the body do you use to walk?", "the legs", "legs"),
    ("Which part of the body do you use to think?", "the brain", "brain"),
    ("Which organ pumps blood around the body?", "the heart", "heart"),
    ("Which organs fill with air when you breathe in?", "the lungs", "breathe"),
    ("Which part of the body do you use to clap?", "the hands", "hands"),
    ("Which part of the body do you wear a hat on?", "the head", "head"),
    ("Which part of the body do you wear socks on?", "the feet", "legs"),
]

MC_BABIES = [
    ("dog", "a puppy"), ("cat", "a kitten"), ("cow", "a calf"), ("sheep", "a lamb"),
    ("horse", "a foal"), ("frog", "a tadpole"), ("duck", "a duckling"), ("bear", "a cub"),
    ("chicken", "a chick"), ("kangaroo", "a joey"), ("goose", "a gosling"), ("pig", "a piglet"),
    ("swan", "a cygnet"),
]
MC_BABY_PHRASINGS = ["What is a baby {a} called?", "What do you call a young {a}?"]

MC_WEAR = [
    ("What do you wear on your feet?", "shoes"), ("What do you wear on your head to keep the sun off?", "a hat"),
    ("What do you wear on your hands when it's cold?", "gloves"),
    ("What do you wear around your neck in winter?", "a scarf"),
    ("What do you wear to see more clearly?", "glasses"),
    ("What do you wear to bed?", "pyjamas"), ("What do you wear to go swimming?", "a swimsuit"),
    ("What do you wear on your wrist to tell the time?", "a watch"),
    ("What do you wear to hold up your trousers?", "a belt"),
    ("What do you wear to stay dry when it rains?", "a raincoat"),
]

MC_MATERIALS = [
    ("What is a window usually made of?", "glass", "glass"),
    ("What are the pages of a book made of?", "paper", "wood"),
    ("What is a car tyre made of?", "rubber", "rubber"),
    ("What are bricks made from?", "clay", "clay"),
    ("What is a candle usually made of?", "wax", "wax"),
    ("What is a cotton T-shirt made from?", "cotton", "cloth"),
    ("What is ice made of?", "water", "water"),
    ("What is bread mainly made from?", "flour", "flour"),
    ("What is cheese made from?", "milk", "dairy"),
    ("What is glass made from?", "sand", "glass"),
    ("What is paper made from?", "wood", "wood"),
    ("What is chocolate made from?", "cocoa beans", "dairy"),  # milk chocolate has milk
    ("What is orange juice made from?", "oranges", "fruit"),
    ("What are wool jumpers made from?", "sheep's wool", "cloth"),
]

# (question phrasings, correct options, wrong options)
MC_PROPERTIES = [
    (["Which animal can fly?", "Which of these animals can fly?"],
     ["an eagle", "a sparrow", "a pigeon", "an owl", "a parrot", "a butterfly"],
     ["a dog", "a cow", "a horse", "a snail", "a pig", "a sheep", "a rabbit", "an elephant",
      "a tortoise"]),
    (["Which animal lives in the sea?", "Which of these animals lives in the ocean?"],
     ["a dolphin", "a shark", "an octopus", "a whale", "a jellyfish"],
     ["a lion", "a horse", "a cow", "a rabbit", "a squirrel", "a camel", "a giraffe", "a fox"]),
    (["Which animal has a long trunk?"], ["an elephant"],
     ["a lion", "a dog", "a giraffe", "a rabbit", "a horse", "a cat"]),
    (["Which animal carries a shell on its back?", "Which of these animals has a shell?"],
     ["a tortoise", "a snail", "a turtle"],
     ["a dog", "a cat", "a horse", "a rabbit", "an eagle", "a giraffe", "a monkey"]),
    (["Which animal has black and white stripes?"], ["a zebra"],
     ["an elephant", "a sheep", "a frog", "a camel", "a hippo", "a giraffe"]),
    (["Which animal has a very long neck?"], ["a giraffe"],
     ["a pig", "a rabbit", "a mouse", "a bear", "a frog", "a hedgehog"]),
    (["Which animal has a hump and lives in the desert?"], ["a camel"],
     ["a penguin", "a dolphin", "a squirrel", "a frog", "a duck", "a seal"]),
    (["Which animal do people keep for its milk?", "Which farm animal gives us milk?"],
     ["a cow", "a goat"], ["a chicken", "a snake", "a frog", "a bee", "a duck", "a spider"]),
    (["Which animal lays eggs?", "Which of these animals hatches from an egg?"],
     ["a hen", "a duck", "a turtle", "a crocodile", "an ostrich"],
     ["a cow", "a dog", "a horse", "a cat", "a sheep", "a pig", "a rabbit", "a monkey"]),
    (["Which animal breathes through gills?", "Which of these animals breathes underwater?"],
     ["a salmon", "a goldfish", "a trout", "a shark"],
     ["a cat", "a dog", "a horse", "an eagle", "a cow", "a lion", "a rabbit"]),
    (["Which animal moves by hopping?", "Which of these animals hops?"],
     ["a kangaroo", "a frog", "a rabbit"],
     ["a snail", "a snake", "a cow", "a fish", "a worm", "an elephant"]),
    (["Which creature spins a web?"], ["a spider"],
     ["a bee", "an ant", "a butterfly", "a cat", "a dog", "a fish"]),
    (["Which animal is famous for being very slow?"], ["a snail", "a tortoise", "a sloth"],
     ["a cheetah", "a horse", "a hare", "a greyhound", "an antelope"]),
    (["Which of these tastes sweet?", "Which of these would taste sweet?"],
     ["honey", "sugar", "a sweet", "jam", "cake"],
     ["a lemon", "salt", "vinegar", "a raw onion", "black pepper", "chilli"]),
    (["Which of these tastes sour?"], ["a lemon", "vinegar", "a lime"],
     ["sugar", "bread", "milk", "honey", "rice", "butter"]),
    (["Which of these tastes salty?"], ["a crisp", "sea water", "a pretzel"],
     ["sugar", "honey", "an apple", "fresh water", "a banana"]),
    (["Which of these is soft?", "Which of these feels soft to touch?"],
     ["a pillow", "cotton wool", "a feather", "a kitten's fur"],
     ["a rock", "a brick", "a nail", "a metal spoon", "a wooden table", "a glass bottle"]),
    (["Which of these is hard?"], ["a rock", "a brick", "a diamond"],
     ["a pillow", "a sponge", "jelly", "a feather", "cotton wool", "a marshmallow"]),
    (["Which of these is sharp?", "Which of these could cut you?"],
     ["a knife", "a needle", "a razor blade", "broken glass"],
     ["a ball", "a pillow", "a sponge", "a balloon", "a sock", "a feather"]),
    (["Which of these is very hot?"], ["a flame", "boiling water", "a hot oven"],
     ["snow", "an ice cube", "ice cream", "a cold drink", "a frozen pea"]),
    (["Which of these is very cold?", "Which of these would feel cold?"],
     ["ice", "snow", "a frozen pea", "an ice lolly"],
     ["a flame", "hot soup", "fresh toast", "a hot oven", "boiling water"]),
    (["Which of these can you see through?"], ["a clear window", "clean water", "plastic wrap"],
     ["a brick wall", "a wooden door", "a book", "a rock", "a metal pan"]),
    (["Which of these floats on water?", "Which of these would float in a bath?"],
     ["a cork", "a rubber duck", "a log", "a leaf"],
     ["a rock", "a coin", "a nail", "a key", "a brick", "a spoon"]),
    (["Which of these melts in the sun?"], ["an ice cube", "ice cream", "a snowman", "butter"],
     ["a rock", "a spoon", "a book", "a brick", "a shoe"]),
    (["Which of these is round?", "Which of these has a round shape?"],
     ["a ball", "a coin", "a wheel", "an orange"],
     ["a box", "a book", "a brick", "a door", "a ruler"]),
    (["Which of these is alive?", "Which of these is a living thing?"],
     ["a tree", "a cat", "a mushroom", "a bird"],
     ["a stone", "a chair", "a cup", "a sock", "a car", "a pencil"]),
    (["Which of these makes a loud noise?"], ["thunder", "a fire alarm", "a drum", "a siren"],
     ["a whisper", "a feather", "a pillow", "a snowflake", "a sock"]),
    (["Which of these needs water to live?"], ["a plant", "a fish", "a flower"],
     ["a rock", "a spoon", "a book", "a chair", "a shoe"]),
]

# (phrasings, items from most to least)
MC_ORDERS = [
    (["Which of these animals is the biggest?", "Which of these is the largest animal?"],
     ["Which of these animals is the smallest?", "Which of these is the tiniest animal?"],
     ["a whale", "an elephant", "a horse", "a dog", "a cat", "a mouse", "an ant"]),
    (["Which of these is the heaviest?", "Which of these weighs the most?"],
     ["Which of these is the lightest?", "Which of these weighs the least?"],
     ["a lorry", "a car", "a bicycle", "a chair", "a book", "a pencil", "a feather"]),
    (["Which of these is usually the tallest?", "Which of these is the highest?"],
     ["Which of these is usually the shortest?"],
     ["a mountain", "a skyscraper", "a tree", "a house", "a person", "a cat", "an ant"]),
    (["Which of these is usually the fastest?", "Which of these moves the quickest?"],
     ["Which of these is usually the slowest?", "Which of these moves the slowest?"],
     ["a jet plane", "a train", "a car", "a bicycle", "a person walking", "a snail"]),
    (["Which of these lasts the longest?", "Which of these is the longest time?"],
     ["Which of these is the shortest amount of time?"],
     ["a century", "a year", "a month", "a week", "a day", "an hour", "a minute", "a second"]),
    (["Which of these is the hottest?"], ["Which of these is the coldest?"],
     ["the sun", "a candle flame", "boiling water", "a cup of hot tea", "a warm bath",
      "a glass of tap water", "an ice cube"]),
]

# (question, answer, wrong options)
MC_TIMES = [
    ("When do people usually eat breakfast?", "in the morning",
     ["at midnight", "late in the evening", "in the middle of the night", "at sunset"]),
    ("When is it usually dark outside?", "at night",
     ["at noon", "in the middle of the day", "at lunchtime", "in the late morning"]),
    ("In which season do leaves fall from many trees?", "autumn",
     ["spring", "summer", "winter"]),
    ("In which season is it usually coldest?", "winter", ["spring", "summer", "autumn"]),
    ("In which season do many flowers start to bloom?", "spring",
     ["autumn", "winter", "early winter"]),
    ("In which season is it usually hottest?", "summer", ["spring", "autumn", "winter"]),
    ("When does the sun rise?", "in the morning",
     ["at midnight", "in the evening", "in the afternoon", "at night"]),
    ("When do owls usually hunt?", "at night",
     ["at noon", "in the middle of the day", "at lunchtime", "in the early afternoon"]),
    ("When do people usually eat lunch?", "around midday",
     ["at midnight", "at dawn", "in the middle of the night", "before sunrise"]),
    ("What do you do when you are tired?", "sleep", ["sing loudly", "run a race", "eat soap", "dance"]),
    ("What do you do when you are thirsty?", "drink water",
     ["eat sand", "go to sleep", "read a book", "put on a coat"]),
    ("What should you do before crossing a busy road?", "look both ways",
     ["close your eyes", "run without looking", "lie down", "start singing"]),
    ("What do you need when it is raining?", "an umbrella",
     ["sunglasses", "a sandcastle", "a fan", "a swimming ring"]),
    ("What do plants need to grow?", "sunlight and water",
     ["darkness and salt", "sand and oil", "paint and glue", "ice and smoke"]),
    ("What happens to water when it gets very cold?", "it freezes",
     ["it boils", "it turns into sand", "it catches fire", "it becomes milk"]),
    ("What happens to ice when it gets warm?", "it melts",
     ["it grows", "it turns to stone", "it gets colder", "it starts to burn"]),
]


def _mc_candidates(rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """Every candidate question as (question, correct option, three wrong options)."""
    cands: list[tuple[str, str, list[str]]] = []

    names = list(MC_CATEGORIES)
    for name in names:
        a_cat, bare, members, conflicts = MC_CATEGORIES[name]
        allowed = [
            other for other in names
            if other != name and other != "animal" and other not in conflicts
            and name not in MC_CATEGORIES[other][3]
        ]
        member_set = {m.lower() for m in members}
        for phrasing in rng.sample(MC_CATEGORY_PHRASINGS, 3):
            correct = rng.choice(members)
            wrong_cats = rng.sample(allowed, 3)
            wrong = []
            for cat in wrong_cats:
                opts = [m for m in MC_CATEGORIES[cat][2]
                        if m.lower() not in member_set and m not in wrong]
                wrong.append(rng.choice(opts))
            cands.append((phrasing.format(a=a_cat, bare=bare), correct, wrong))

    def grouped(items: list[tuple[str, str, str]], make_q) -> None:
        for q, ans, group in items:
            pool = []
            for _, other, g in items:
                if g != group and other != ans and other not in pool:
                    pool.append(other)
            cands.append((make_q(q), ans, rng.sample(pool, 3)))

    for phrasing in MC_USE_PHRASINGS:
        chosen = rng.sample(MC_USES, 26)
        # each phrasing gets its own subset; distractors come from the full list
        for task, ans, group in chosen:
            pool = []
            for _, other, g in MC_USES:
                if g != group and other != ans and other not in pool:
                    pool.append(other)
            cands.append((phrasing.format(t=task), ans, rng.sample(pool, 3)))

    grouped(MC_PLACES, lambda q: q)
    grouped(MC_JOBS, lambda q: q)
    grouped(MC_BODY, lambda q: q)
    grouped(MC_MATERIALS, lambda q: q)

    for subject, color, exclude in MC_COLORS:
        pool = [c for c in MC_ALL_COLORS if c != color and c not in exclude]
        cands.append((f"What color is {subject}?", color, rng.sample(pool, 3)))

    sounds = [(q, a, a) for q, a in MC_SOUNDS]
    grouped(sounds, lambda q: q)

    wear = [(q, a, a) for q, a in MC_WEAR]
    grouped(wear, lambda q: q)

    for phrasing in MC_BABY_PHRASINGS:
        for animal, baby in MC_BABIES:
            pool = [b for _, b in MC_BABIES if b != baby]
            cands.append((phrasing.format(a=animal), baby, rng.sample(pool, 3)))

    for phrasings, good, bad in MC_PROPERTIES:
        for phrasing in phrasings:
            cands.append((phrasing, rng.choice(good), rng.sample(bad, 3)))

    for most_qs, least_qs, ordered in MC_ORDERS:
        for q in most_qs:
            idx = sorted(rng.sample(range(len(ordered)), 4))
            cands.append((q, ordered[idx[0]], [ordered[i] for i in idx[1:]]))
        for q in least_qs:
            idx = sorted(rng.sample(range(len(ordered)), 4))
            cands.append((q, ordered[idx[-1]], [ordered[i] for i in idx[:-1]]))

    for q, ans, bad in MC_TIMES:
        cands.append((q, ans, rng.sample(bad, 3)))
    return cands


def build_everyday_mc(rng: random.Random, n: int = 300) -> list[dict]:
    cands = _mc_candidates(rng)
    seen: set[str] = set()
    uniq = []
    for q, ans, wrong in cands:
        if q.lower() in seen:
            continue
        opts = [ans] + wrong
        if len({o.lower() for o in opts}) != 4:
            raise RuntimeError(f"repeated option in {q!r}: {opts}")
        seen.add(q.lower())
        uniq.append((q, ans, wrong))
    if len(uniq) < n:
        raise RuntimeError(f"only {len(uniq)} distinct multiple-choice questions")
    rng.shuffle(uniq)
    rows = []
    for i, (q, ans, wrong) in enumerate(uniq[:n]):
        wrong = list(wrong)
        rng.shuffle(wrong)
        pos = i % 4  # exactly balanced answer positions
        choices = wrong[:pos] + [ans] + wrong[pos:]
        rows.append({"answer": pos, "choices": choices, "question": q})
    return rows


# --------------------------------------------------------------------------------------------
# 6. general_instructions (replay data; no capitals, no opposites, no "which of these")
# --------------------------------------------------------------------------------------------

GI_SYNONYMS = [
    ("happy", "joyful"), ("big", "large"), ("small", "tiny"), ("quick", "fast"),
    ("begin", "start"), ("finish", "end"), ("smart", "clever"), ("tired", "sleepy"),
    ("angry", "furious"), ("rich", "wealthy"), ("funny", "amusing"), ("easy", "simple"),
    ("shut", "close"), ("gift", "present"), ("sick", "ill"), ("scared", "afraid"),
    ("silent", "quiet"), ("enormous", "huge"), ("purchase", "buy"), ("reply", "answer"),
    ("choose", "pick"), ("jump", "leap"), ("shout", "yell"), ("gather", "collect"),
    ("mistake", "error"), ("road", "street"), ("rock", "stone"), ("sofa", "couch"),
    ("brave", "courageous"), ("strange", "odd"), ("fix", "repair"), ("look", "see"),
    ("chilly", "cold"), ("wealthy", "rich"), ("tidy", "neat"), ("damp", "wet"),
]
GI_SYN_PHRASINGS = ["Give a synonym for {w}.", "What is another word for {w}?",
                    "Suggest a word that means the same as '{w}'."]

GI_WORDS = [
    "cat", "garden", "window", "pencil", "rabbit", "planet", "basket", "ladder", "kitten",
    "button", "candle", "forest", "castle", "bridge", "jacket", "butter", "monkey", "pocket",
    "ticket", "market", "rocket", "turtle", "helmet", "carpet", "island", "river", "stone",
    "flower", "apple", "dragon", "lemon", "guitar", "sandwich", "blanket", "pillow", "tiger",
    "mirror", "doctor", "train", "bottle", "spoon", "table", "music", "paper", "cloud",
    "orange", "violin", "yellow", "winter", "puzzle",
]

GI_PLURALS = [
    ("mouse", "mice"), ("child", "children"), ("tooth", "teeth"), ("foot", "feet"),
    ("person", "people"), ("goose", "geese"), ("man", "men"), ("woman", "women"),
    ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("city", "cities"),
    ("box", "boxes"), ("bus", "buses"), ("baby", "babies"), ("potato", "potatoes"),
    ("hero", "heroes"), ("sheep", "sheep"), ("deer", "deer"), ("ox", "oxen"),
    ("glass", "glasses"), ("dish", "dishes"), ("church", "churches"), ("fox", "foxes"),
    ("party", "parties"), ("toy", "toys"), ("key", "keys"), ("shelf", "shelves"),
    ("loaf", "loaves"), ("half", "halves"), ("wife", "wives"), ("life", "lives"),
    ("tomato", "tomatoes"), ("match", "matches"), ("brush", "brushes"), ("story", "stories"),
    ("day", "days"), ("house", "houses"),
]
GI_PLURAL_PHRASINGS = ["Write the plural of {w}.", "What is the plural of '{w}'?",
                       "Give the plural form of the word {w}."]

GI_PAST = [
    ("go", "went"), ("eat", "ate"), ("run", "ran"), ("swim", "swam"), ("write", "wrote"),
    ("buy", "bought"), ("think", "thought"), ("see", "saw"), ("take", "took"),
    ("bring", "brought"), ("sing", "sang"), ("drink", "drank"), ("fly", "flew"),
    ("drive", "drove"), ("speak", "spoke"), ("catch", "caught"), ("teach", "taught"),
    ("sleep", "slept"), ("begin", "began"), ("break", "broke"), ("choose", "chose"),
    ("forget", "forgot"), ("give", "gave"), ("know", "knew"), ("ride", "rode"), ("sit", "sat"),
    ("stand", "stood"), ("throw", "threw"), ("wear", "wore"), ("win", "won"),
    ("walk", "walked"), ("play", "played"), ("jump", "jumped"), ("carry", "carried"),
    ("stop", "stopped"), ("make", "made"),
]
GI_PAST_PHRASINGS = ["What is the past tense of '{w}'?", "Give the past tense of the verb {w}.",
                     "Write the past tense of {w}."]

# words of 3 to 10 letters for the letter-counting instructions
GI_COUNT_WORDS = [
    "sun", "bee", "map", "owl", "tree", "frog", "lamp", "milk", "cake", "chair", "bread",
    "horse", "lemon", "pencil", "garden", "kitchen", "blanket", "teacher", "umbrella",
    "elephant", "mountain", "butterfly", "pineapple", "breakfast", "basketball", "strawberry",
    "dinosaur", "notebook",
]

GI_UNITS = [
    ("hours", "minutes", 60), ("minutes", "seconds", 60), ("kilometers", "meters", 1000),
    ("kilograms", "grams", 1000), ("days", "hours", 24), ("weeks", "days", 7),
    ("meters", "centimeters", 100), ("liters", "milliliters", 1000), ("years", "months", 12),
    ("centimeters", "millimeters", 10),
]

GI_PHRASES = [
    "good morning", "see you soon", "fresh bread", "happy birthday", "open the door",
    "the quick fox", "green tea", "thank you", "welcome home", "rainy day", "blue sky",
    "well done", "drink more water", "safe travels", "lunch is ready", "time to go",
    "keep it simple", "nice to meet you",
]

GI_SENTENCES = [
    "The cat sat on the warm mat.", "We walked to the park after lunch.",
    "My sister plays the piano every evening.", "Rain fell all night.",
    "Please close the window before you leave.", "The bus was late again today.",
    "He bought three apples and a loaf of bread.", "Birds sing early in the morning.",
    "I like reading books on quiet Sunday afternoons.", "The kettle is boiling.",
    "They painted the fence bright green last summer.", "Dinner will be ready soon.",
    "Our neighbour grows tomatoes in her small garden.", "Turn left at the bakery.",
]

GI_FACTS = [
    ("How many days are in a week?", "There are seven days in a week."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("How many seconds are in a minute?", "There are 60 seconds in a minute."),
    ("How many months are in a year?", "There are 12 months in a year."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("How many items are in a dozen?", "A dozen is 12 items."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many sides does a square have?", "A square has four sides."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("How many letters are in the English alphabet?", "The English alphabet has 26 letters."),
    ("How many years are in a century?", "A century is 100 years."),
    ("How many weeks are in a year?", "A year has 52 weeks."),
    ("How many years are in a decade?", "A decade is ten years."),
    ("How many centimeters are in a meter?", "There are 100 centimeters in a meter."),
    ("How many grams are in a kilogram?", "There are 1,000 grams in a kilogram."),
]

GI_SORT_WORDS = [
    "apple", "pear", "fig", "melon", "grape", "banana", "cherry", "kiwi", "lime", "plum",
    "river", "mountain", "valley", "desert", "island", "forest", "ocean", "meadow",
    "violin", "drum", "flute", "harp", "piano", "trumpet",
]

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _gi_family_rows(rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    fam: dict[str, list[tuple[str, str]]] = {}

    fam["synonym"] = [(rng.choice(GI_SYN_PHRASINGS).format(w=w), cap_first(s) + ".")
                      for w, s in GI_SYNONYMS]
    fam["reverse"] = []
    for w in rng.sample(GI_WORDS, 26):
        q = rng.choice(["Spell the word '{w}' backwards.", "Write '{w}' backwards.",
                        "Reverse the letters of '{w}'."]).format(w=w)
        fam["reverse"].append((q, w[::-1]))
    fam["plural"] = [(rng.choice(GI_PLURAL_PHRASINGS).format(w=w), p) for w, p in GI_PLURALS]
    fam["past"] = [(rng.choice(GI_PAST_PHRASINGS).format(w=w), p) for w, p in GI_PAST]

    arith = []
    while len(arith) < 40:
        kind = rng.choice(["plus", "minus", "times", "add", "subtract", "multiply"])
        if kind in ("plus", "add"):
            a, b = rng.randint(2, 90), rng.randint(2, 90)
            q = f"What is {a} plus {b}?" if kind == "plus" else f"Add {a} and {b}."
            r = f"{a + b}." if kind == "plus" else f"{a} plus {b} is {a + b}."
        elif kind in ("minus", "subtract"):
            a = rng.randint(10, 99)
            b = rng.randint(1, a - 1)
            q = f"What is {a} minus {b}?" if kind == "minus" else f"Subtract {b} from {a}."
            r = f"{a - b}." if kind == "minus" else f"{a} minus {b} is {a - b}."
        else:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            q = f"What is {a} times {b}?" if kind == "times" else f"Multiply {a} by {b}."
            r = f"{a * b}." if kind == "times" else f"{a} times {b} is {a * b}."
        if q not in [x for x, _ in arith]:
            arith.append((q, r))
    fam["arithmetic"] = arith

    conv = []
    while len(conv) < 34:
        src, dst, factor = rng.choice(GI_UNITS)
        n = rng.randint(2, 12)
        if rng.random() < 0.5:
            q, r = f"Convert {n} {src} to {dst}.", f"{n * factor} {dst}."
        else:
            q, r = f"How many {dst} are in {n} {src}?", f"There are {n * factor} {dst} in {n} {src}."
        if q not in [x for x, _ in conv]:
            conv.append((q, r))
    fam["conversion"] = conv

    fam["letters"] = [(f"How many letters are in the word '{w}'?",
                       f"The word '{w}' has {number_words(len(w))} letters.")
                      for w in rng.sample(GI_COUNT_WORDS, 22)]
    fam["uppercase"] = [(rng.choice(["Write '{p}' in uppercase letters.",
                                     "Rewrite '{p}' using only uppercase letters."]).format(p=p),
                         p.upper()) for p in GI_PHRASES]

    sorts = []
    while len(sorts) < 20:
        words = rng.sample(GI_SORT_WORDS, rng.choice([3, 4]))
        lead = rng.choice(["Sort these words alphabetically:", "Put these words in alphabetical order:"])
        q = f"{lead} {', '.join(words)}."
        if q not in [x for x, _ in sorts] and words != sorted(words):
            sorts.append((q, ", ".join(sorted(words))))
    fam["sort"] = sorts

    nums = rng.sample(range(3, 200), 14)
    fam["parity"] = [(f"Is {n} an even or an odd number?", f"{n} is {'even' if n % 2 == 0 else 'odd'}.")
                     for n in nums]
    compare = []
    while len(compare) < 14:
        a, b = rng.sample(range(1, 1000), 2)
        if rng.random() < 0.5:
            q, r = f"Which number is larger, {a} or {b}?", f"{max(a, b)} is larger."
        else:
            q, r = f"Which number is smaller, {a} or {b}?", f"{min(a, b)} is smaller."
        if q not in [x for x, _ in compare]:
            compare.append((q, r))
    fam["compare"] = compare
    fam["facts"] = list(GI_FACTS)

    letters = []
    for letter in rng.sample(ALPHABET[1:-1], 12):
        i = ALPHABET.index(letter)
        if rng.random() < 0.5:
            letters.append((f"What letter comes after {letter} in the alphabet?", ALPHABET[i + 1]))
        else:
            letters.append((f"What letter comes before {letter} in the alphabet?", ALPHABET[i - 1]))
    fam["alphabet"] = letters

    fam["word_count"] = [(f"How many words are in this sentence: \"{s}\"",
                          f"{number_words(len(s.split()))} words.".capitalize())
                         for s in GI_SENTENCES]
    return fam


def build_general_instructions(rng: random.Random, n: int = 300) -> list[dict]:
    fam = _gi_family_rows(rng)
    rows = []
    seen: set[str] = set()
    for name in fam:
        for q, r in fam[name]:
            if q.lower() in seen:
                continue
            seen.add(q.lower())
            rows.append({"instruction": q, "response": r})
    rng.shuffle(rows)
    if len(rows) < n:
        raise RuntimeError(f"only {len(rows)} general instructions")
    return rows[:n]


# --------------------------------------------------------------------------------------------
# 7. harbor_handbook (domain-adaptation raw text about an invented harbour)
# --------------------------------------------------------------------------------------------
# Every fact below is invented for ftpipe and used consistently across paragraphs.

HB_NAME = "Tern Bay Harbour"
HB_AUTH = "Tern Bay Harbour Authority"
HB_CONTROL = "Tern Bay Control"

# (class, lower LOA bound exclusive, upper bound inclusive, typical ships, tugs, pilot, notice h)
HB_CLASSES = [
    ("A", 0, 24, "yachts, workboats, pilot launches and most inshore fishing boats", 0, "not required", 0),
    ("B", 24, 70, "coasters, larger fishing vessels, survey ships and harbour service craft", 0,
     "required only for tankers and for vessels carrying dangerous goods", 12),
    ("C", 70, 150, "short-sea cargo ships, small ferries and feeder tankers", 1, "compulsory", 24),
    ("D", 150, 225, "ro-ro ferries, bulk carriers, product tankers and mid-size container ships", 2,
     "compulsory", 24),
    ("E", 225, 300, "large container ships and cruise ships", 3, "compulsory, with two pilots", 48),
]


def hb_class_of(loa: float) -> str:
    for name, low, high, *_ in HB_CLASSES:
        if low < loa <= high:
            return name
    raise ValueError(loa)


# (number, quay, main use, max LOA m, depth at chart datum m, services, equipment, special rule)
HB_BERTHS = [
    (1, "North Quay", "roll-on/roll-off ferries", 160, 8.0,
     ["fresh water", "shore power", "sewage reception"], "a double-deck linkspan",
     "Scheduled ferries have priority at Berth 1, and other vessels may be asked to shift at two "
     "hours' notice when a ferry is due."),
    (2, "North Quay", "roll-on/roll-off ferries", 140, 7.5, ["fresh water", "shore power"],
     "a single-deck linkspan",
     "Berth 2 is the relief ferry berth; it is also used for lay-by when no ferry is expected."),
    (3, "North Quay", "cruise ships", 290, 10.5,
     ["fresh water", "shore power", "sewage reception"],
     "a passenger terminal with two covered gangways",
     "While passengers are embarking or landing, no cargo may be worked within 50 m of the "
     "gangways at Berth 3."),
    (4, "East Quay", "general cargo", 148, 9.0, ["fresh water", "bunkering by barge"],
     "two mobile harbour cranes of 60 tonnes",
     "Heavy lifts above 60 tonnes at Berth 4 need a lift plan approved by the Harbour Master."),
    (5, "East Quay", "general cargo and timber", 148, 9.0, ["fresh water", "bunkering by barge"],
     "a covered transit shed of 6,000 square metres",
     "Timber deck cargo at Berth 5 must be secured before any lashings are released on the "
     "seaward side."),
    (6, "East Quay", "container ships", 250, 14.5, ["fresh water", "bunkering by barge"],
     "two ship-to-shore container cranes",
     "Berth 6 is the only berth for Class E container ships, and its slots are booked through the "
     "terminal at least 48 hours ahead."),
    (7, "East Quay", "container ships", 180, 11.0, ["fresh water", "bunkering by barge"],
     "one ship-to-shore container crane and a reefer stack with 220 plugs",
     "Vessels longer than 180 m are never allocated to Berth 7, even when Berth 6 is occupied."),
    (8, "South Terminal", "grain bulk carriers", 200, 13.0, ["fresh water", "bunkering by barge"],
     "a grain loader fed from the terminal silos",
     "Hatches at Berth 8 must be closed when it rains, and loading stops when the dust alarm "
     "sounds."),
    (9, "South Terminal", "aggregate bulk carriers", 170, 10.0, ["bunkering by barge"],
     "a conveyor and hopper for sand and crushed stone",
     "At Berth 9 the quay sprinklers must run during discharge to keep dust down."),
    (10, "South Terminal", "oil products tankers", 185, 11.2, ["bunkering by barge"],
     "four loading arms and a fire-fighting monitor tower",
     "A safety zone of 50 m around a tanker at Berth 10 is closed to all other craft while cargo "
     "is being transferred."),
    (11, "South Terminal", "liquefied gas carriers", 120, 8.5, [],
     "two gas loading arms with emergency release couplings",
     "A safety zone of 100 m around a gas carrier at Berth 11 is closed to all other craft from "
     "arrival until departure."),
    (12, "Inner Basin", "lay-by and repairs", 110, 7.0, ["fresh water", "bunkering by road tanker"],
     "a 40-tonne mobile crane available on request",
     "Hot work at Berth 12 needs a hot work permit from the Harbour Master's office."),
    (13, "Fishing Basin", "fishing vessels", 45, 4.5, ["fresh water", "bunkering by road tanker"],
     "an ice plant and the fish market next to the quay",
     "Boats landing a catch have priority at Berth 13 between 04:00 and 09:00."),
    (14, "Marina", "yachts and other small craft", 23, 3.0,
     ["fresh water", "shore power", "sewage reception"], "floating pontoons with 220 berths",
     "Berth 14 is run by the marina office, which allocates pontoon places on VHF channel 80."),
]

HB_WORK_HOURS = {
    1: "at all hours, following the ferry timetable",
    2: "at all hours, following the ferry timetable",
    3: "from 06:00 to 23:00 on days when a cruise ship is alongside",
    4: "from 06:00 to 22:00, and at night only by arrangement with the terminal",
    5: "from 06:00 to 22:00, and at night only by arrangement with the terminal",
    6: "at all hours, in three shifts",
    7: "at all hours, in three shifts",
    8: "at all hours except when rain stops loading",
    9: "from 06:00 to 22:00, because of the noise of the conveyor",
    10: "at all hours, subject to the weather limits for cargo transfer",
    11: "at all hours, subject to the weather limits for cargo transfer",
    12: "from 07:00 to 19:00 for repair work",
    13: "at all hours, with landing priority from 04:00 to 09:00",
    14: "at all hours for arrivals, with the marina office open from 08:00 to 20:00",
}

HB_QUAY_ROUTE = {
    "North Quay": "turn to port after the breakwater entrance and follow the northern side of the "
                  "Outer Harbour",
    "East Quay": "hold the centre of the Outer Harbour and swing in the turning basin before "
                 "coming alongside",
    "South Terminal": "turn to starboard immediately inside the entrance and keep clear of the "
                      "South Spit buoy",
    "Inner Basin": "pass through the Inner Basin cut at no more than 4 knots",
    "Fishing Basin": "follow the small-craft lane along the East Breakwater into the Fishing Basin",
    "Marina": "follow the small-craft lane along the East Breakwater and call the marina office "
              "before entering",
}

HB_GATES = {"North Quay": 1, "East Quay": 2, "South Terminal": 3, "Inner Basin": 2,
            "Fishing Basin": 4, "Marina": 4}

HB_VHF = [
    (16, "distress, urgency and safety calls, and the first call to Tern Bay Control"),
    (12, "the working channel of Tern Bay Control for all traffic reports and instructions"),
    (9, "the pilot launches and the pilot station"),
    (72, "tugs working with a vessel during berthing and unberthing"),
    (14, "port security and the gatehouses"),
    (80, "the marina office at Berth 14"),
]

HB_REPORTS = [
    ("Report 1", "when passing position Tern Alpha, the pilot boarding point 1.5 nautical miles "
                 "south of the Gannet Light",
     "the vessel's name, draught, destination berth and estimated time at the breakwater"),
    ("Report 2", "when abeam of the Gannet Light at the seaward end of the Gannet Channel",
     "confirmation that the vessel is proceeding inbound and the number of persons on board"),
    ("Report 3", "when passing between the breakwater heads",
     "the time of passing and the readiness of the tugs, if any"),
    ("Report 4", "when all fast at the berth, or when anchored",
     "the time of arrival and any defects found during the passage"),
]

HB_SPEEDS = [
    ("the Gannet Channel", 10), ("the Outer Harbour", 6), ("the Inner Basin", 4),
    ("the Fishing Basin", 4), ("the Marina", 3),
]

HB_ANCHORAGES = [
    ("Anchorage A", "2 nautical miles south-east of Tern Alpha", "18 to 22 m",
     "deep-draught vessels and all Class E ships"),
    ("Anchorage B", "1 nautical mile west of the Gannet Channel entrance", "12 to 15 m",
     "vessels of Classes C and D waiting for a berth or a tide"),
    ("Anchorage C", "inside Tern Point, north of the channel", "6 to 8 m",
     "Class A and B vessels sheltering from westerly weather"),
]

HB_WEATHER = [
    ("Class E vessels may not enter or leave", "the mean wind speed is above 30 knots"),
    ("Class D vessels may not enter or leave", "the mean wind speed is above 35 knots"),
    ("all movements except emergency movements stop", "the mean wind speed is above 45 knots"),
    ("container cranes at Berths 6 and 7 stop work and are secured", "gusts exceed 40 knots"),
    ("cargo transfer at Berths 10 and 11 stops", "the mean wind exceeds 35 knots or lightning is "
                                                 "reported within 5 nautical miles"),
    ("the linkspans at Berths 1 and 2 are raised", "gusts exceed 45 knots"),
    ("Class D and E movements are suspended", "visibility in the Gannet Channel falls below "
                                              "1,000 m"),
    ("all movements except Class A craft are suspended", "visibility falls below 500 m"),
]

HB_GLOSSARY = [
    ("Chart datum", "the level below which the water seldom falls; depths in this handbook are "
                    "given below chart datum and heights of tide above it"),
    ("Length overall (LOA)", "the distance from the foremost to the aftermost point of a vessel's "
                             "hull, used to decide its class and which berths it may use"),
    ("Under-keel clearance", "the vertical distance between the lowest point of the keel and the "
                             "seabed at the place the vessel is"),
    ("Height of tide", "the height of the water surface above chart datum at a given moment"),
    ("Draught", "the depth of the lowest point of the vessel below the waterline"),
    ("Linkspan", "an adjustable bridge that connects the ramp of a ro-ro ferry to the quay at "
                 "any state of the tide"),
    ("Pilot boarding point", "the position where the pilot joins an inbound vessel; at Tern Bay "
                             "this is Tern Alpha"),
    ("Turning basin", "the wide area in the Outer Harbour, 450 m across, where vessels swing "
                      "before berthing"),
    ("Tidal window", "the period around high water during which a deep-draught vessel has "
                     "enough water to transit the Gannet Channel"),
    ("Bollard", "a short strong post on the quay to which mooring lines are made fast"),
    ("Spring tide", "a tide with a larger than average range, occurring near new and full moon"),
    ("Neap tide", "a tide with a smaller than average range, occurring near the quarter moons"),
    ("Safety zone", "an area around a vessel or berth that other craft may not enter without "
                    "permission from Tern Bay Control"),
    ("Hot work", "any work that uses a flame or produces sparks, such as welding, burning or "
                 "grinding"),
    ("Reefer", "a refrigerated container that needs electrical power while on the terminal"),
    ("Bunkering", "the supply of fuel to a vessel for its own use"),
    ("Lay-by berth", "a berth where a vessel waits without working cargo"),
    ("Small-craft lane", "the marked lane along the East Breakwater that Class A craft must use "
                         "inside the harbour"),
    ("Harbour Master", "the officer of the Tern Bay Harbour Authority responsible for the safety "
                       "of navigation and the allocation of berths"),
    ("Notice of arrival", "the message a vessel's agent sends before arrival with the vessel's "
                          "particulars, cargo and expected time"),
]

HB_TIDE = {"MHWS": 4.6, "MHWN": 3.5, "MLWN": 1.6, "MLWS": 0.5, "channel": 12.4}


def _hb_required_tide(draught: float) -> float:
    """Height of tide needed to transit the Gannet Channel with the required clearance."""
    clearance = max(1.0, round(0.1 * draught, 2))
    return round(max(0.0, draught + clearance - HB_TIDE["channel"]), 1)


HB_NAME_A = ["Grey", "Silver", "Morning", "Northern", "Quiet", "Bright", "Swift", "Coastal",
             "Amber", "Western", "Island", "Golden", "Steady", "Autumn", "Evening", "Blue",
             "Patient", "Southern"]
HB_NAME_B = ["Heron", "Tide", "Harvest", "Star", "Wave", "Petrel", "Trader", "Spirit", "Dawn",
             "Pioneer", "Gull", "Meadow", "Crest", "Voyager", "Lark", "Current", "Lantern",
             "Kestrel"]

# ship type -> (berths it may use, LOA range m, draught per metre of LOA, carries dangerous goods)
HB_SHIP_TYPES = {
    "ro-ro ferry": ([1, 2], (95, 175), 0.044, False),
    "cruise ship": ([3], (120, 300), 0.034, False),
    "general cargo ship": ([4, 5], (70, 160), 0.058, False),
    "container ship": ([6, 7], (120, 260), 0.052, False),
    "grain carrier": ([8], (140, 215), 0.058, False),
    "aggregate carrier": ([9], (90, 180), 0.060, False),
    "product tanker": ([10], (60, 195), 0.060, True),
    "gas carrier": ([11], (50, 130), 0.065, True),
    "survey ship": ([12], (40, 115), 0.060, False),
    "fishing vessel": ([13], (12, 50), 0.110, False),
    "yacht": ([14], (8, 24), 0.140, False),
}
HB_BERTH = {b[0]: b for b in HB_BERTHS}


def _hb_examples(rng: random.Random, count: int) -> list[str]:
    names = [f"{a} {b}" for a in HB_NAME_A for b in HB_NAME_B]
    rng.shuffle(names)
    out = []
    types = list(HB_SHIP_TYPES)
    for k in range(1, count + 1):
        kind = types[(k - 1) % len(types)] if k <= len(types) else rng.choice(types)
        berths, (lo, hi), ratio, dangerous = HB_SHIP_TYPES[kind]
        loa = rng.randint(lo, hi)
        draught = round(loa * ratio * rng.uniform(0.85, 1.15), 1)
        wind = rng.randint(6, 38)
        name = names[k - 1]
        cls = hb_class_of(loa)
        _, _, _, _, tugs, _, notice = [c for c in HB_CLASSES if c[0] == cls][0]
        s = [f"Example {k}. The {kind} {name}, {loa} m long with a draught of {draught:.1f} m, "
             f"is expected with a forecast mean wind of {wind} knots. Her length puts her in "
             f"Class {cls}."]
        if cls == "A":
            s.append("She needs no pilot and no tugs.")
        elif cls == "B":
            s.append("Although she is only Class B, she carries dangerous goods, so a pilot is "
                     "compulsory." if dangerous else "As a Class B vessel without dangerous "
                     "goods she needs no pilot.")
            s.append("No tugs are required.")
        else:
            s.append("Pilotage is compulsory, and two pilots board at Tern Alpha." if cls == "E"
                     else "Pilotage is compulsory.")
            if wind > 20:
                s.append(f"Because the wind is above 20 knots, she needs {number_words(tugs + 1)} "
                         f"tugs instead of {number_words(tugs)}.")
            else:
                s.append(f"She needs {number_words(tugs)} tug{'s' if tugs > 1 else ''}.")
        if notice:
            s.append(f"Her agent must send notice of arrival at least {notice} hours before she "
                     "reaches Tern Alpha.")
        else:
            s.append("She only has to call Tern Bay Control before passing the breakwater heads.")
        if dangerous:
            s.append("Her cargo must also be declared as dangerous goods 48 hours before arrival.")
        ok, refused = [], []
        for b in berths:
            _, _, _, max_loa, depth, *_ = HB_BERTH[b]
            max_d = round(depth - 0.6, 1)
            if loa > max_loa:
                refused.append(f"Berth {b} takes vessels only up to {max_loa} m")
            elif draught > max_d:
                refused.append(f"the greatest draught at Berth {b} is {max_d:.1f} m")
            else:
                ok.append(b)
        if ok:
            s.append("She can be given " + " or ".join(f"Berth {b}" for b in ok) + ".")
            if refused:
                s.append(cap_first(refused[0]) + ", so that berth is not possible for her.")
        else:
            s.append(cap_first("; ".join(refused)) + ", so the Harbour Master will refuse the "
                     "call.")
        if draught <= 11.2:
            s.append("Her draught lets her use the Gannet Channel at any state of the tide.")
        else:
            s.append(f"She needs a height of tide of at least {_hb_required_tide(draught):.1f} m "
                     "to use the Gannet Channel.")
        if ok and cls == "E" and wind > 30:
            s.append("With the wind above 30 knots she may not enter, so she waits at Anchorage A "
                     "until it eases.")
        elif ok and cls == "D" and wind > 35:
            s.append("With the wind above 35 knots she may not enter, so she waits at Anchorage B "
                     "until it eases.")
        out.append(" ".join(s))
    return out


def _hb_sections(rng: random.Random) -> list[tuple[str, list[str]]]:
    """The handbook as (section heading, paragraphs)."""
    ch = rng.choice
    secs: list[tuple[str, list[str]]] = []

    # 1 -------------------------------------------------------------------------------------
    paras = [
        f"This handbook sets out the operating rules of {HB_NAME}. It is issued by the "
        f"{HB_AUTH} and applies to every vessel, tug, launch and person working within the "
        "harbour limits, which run from the Gannet Light to the head of the Inner Basin.",
        "Where this handbook says that something shall be done, the rule is mandatory. Where it "
        "says should, the rule is strongly recommended practice, and a master who departs from "
        "it must be able to explain why.",
        "The Harbour Master may give a direction that differs from this handbook when safety "
        "requires it. A direction given on VHF by Tern Bay Control on behalf of the Harbour "
        "Master has the same force as a written direction.",
        "Masters remain responsible for the safe navigation of their vessels at all times. The "
        "presence of a pilot on board, or of tugs alongside, does not remove that responsibility.",
        "Amendments to this handbook are issued as numbered notices to mariners. A copy of every "
        "notice in force is kept at the Harbour Master's office on North Quay and at each "
        "gatehouse.",
        f"The Harbour Master's office on North Quay is staffed at all hours. {HB_CONTROL} keeps "
        "a continuous watch on VHF channels 16 and 12 and answers the harbour emergency line, "
        "555 0100, at any time of day or night.",
    ]
    secs.append(("1. Introduction and Scope", paras))

    # 2 -------------------------------------------------------------------------------------
    paras = [
        f"{HB_NAME} lies at the head of Tern Bay and faces south. The harbour is protected by "
        "the West Breakwater and the East Breakwater, whose heads are 220 m apart and form the "
        "only entrance.",
        "The Gannet Channel leads from the open sea to the breakwater entrance. It is 4.2 "
        "nautical miles long and 180 m wide, and it is dredged to 12.4 m below chart datum along "
        "its whole length.",
        "The Gannet Light stands on Gannet Rock at the seaward end of the channel. It shows a "
        "white flash every ten seconds and can be seen at about 18 nautical miles in clear "
        "weather.",
        "Inbound, the starboard-hand buoys of the Gannet Channel are green and carry odd numbers "
        "from 1 to 11. The port-hand buoys are red and carry even numbers from 2 to 12.",
        "Inside the breakwaters lies the Outer Harbour, with the turning basin of 450 m diameter "
        "at its centre. North Quay, East Quay and the South Terminal all open onto the Outer "
        "Harbour.",
        "The Inner Basin is reached through a cut 60 m wide at the north-east corner of the "
        "Outer Harbour. It holds the lay-by and repair berth. The Fishing Basin and the Marina "
        "lie behind the East Breakwater and are reached by the small-craft lane.",
        "The harbour has fourteen numbered berths. Berths 1 to 3 are on North Quay, Berths 4 to "
        "7 on East Quay, Berths 8 to 11 at the South Terminal, Berth 12 in the Inner Basin, "
        "Berth 13 in the Fishing Basin and Berth 14 in the Marina.",
        "The South Spit is a shoal patch inside the entrance on the starboard side. It is "
        "marked by the South Spit buoy, a yellow pillar buoy, and vessels shall leave the buoy "
        "to starboard when turning towards the South Terminal.",
    ]
    for k in range(1, 7):
        dist = round(4.2 - (k - 1) * 0.8, 1)
        odd, even = 2 * k - 1, 2 * k
        period = 2 + k % 3 * 2
        paras.append(
            f"Buoys {odd} and {even} lie {dist} nautical miles from the breakwater heads. Buoy "
            f"{odd} shows a green light and Buoy {even} a red light, each flashing every {period} "
            "seconds. "
            + ch(["Vessels should keep to the starboard side of the channel between them.",
                  "A damaged or unlit buoy shall be reported to Tern Bay Control at once.",
                  "The buoys are checked by the Harbour Authority launch every week."])
            + (" The channel bends ten degrees to the east between Buoys 5 and 7."
               if k == 3 else "")
        )
    secs.append(("2. Harbour Overview", paras))

    # 3 -------------------------------------------------------------------------------------
    paras = [
        "Every vessel using the harbour is placed in one of five classes by its length overall. "
        "The class decides whether pilotage is compulsory, how many tugs must be used, how much "
        "notice of arrival is needed and which berths the vessel may be given.",
    ]
    for name, low, high, typical, tugs, pilot, notice in HB_CLASSES:
        size = (f"up to {high} m" if low == 0 else f"over {low} m and up to {high} m")
        tug_text = ("No tugs are required" if tugs == 0 else
                    f"{number_words(tugs).capitalize()} tug{'s are' if tugs > 1 else ' is'} "
                    "required for berthing and unberthing")
        notice_text = ("No notice of arrival is needed, but the vessel shall call "
                       f"{HB_CONTROL} before passing the breakwater heads" if notice == 0 else
                       f"Notice of arrival shall be sent at least {notice} hours before the "
                       "vessel reaches Tern Alpha")
        paras.append(
            f"Class {name} covers vessels {size} in length overall. Typical Class {name} vessels "
            f"are {typical}. Pilotage for Class {name} is {pilot}."
        )
        paras.append(
            f"{tug_text} for a Class {name} vessel. {notice_text}. "
            + ch([
                f"The Harbour Master may vary these requirements for a Class {name} vessel "
                "with unusual handling characteristics.",
                f"A Class {name} vessel with a defect affecting its engines or steering shall "
                "report the defect before entering.",
                f"The class of a vessel is taken from its registered length overall, not from "
                "its length on the day.",
            ])
        )
        if tugs:
            windy = tugs + 1
            paras.append(
                f"When the mean wind speed is above 20 knots, a Class {name} vessel shall use "
                f"{number_words(windy)} tugs instead of {number_words(tugs)}. Tugs are ordered "
                "through the pilot station, and the tug master works with the pilot on VHF "
                "channel 72."
            )
    secs.append(("3. Vessel Classes", paras))

    paras = [
        "The checklists below summarise what each class of vessel must do before and during "
        "arrival. They do not replace the detailed rules in the other sections."
    ]
    for name, low, high, typical, tugs, pilot, notice in HB_CLASSES:
        steps = []
        if notice:
            steps.append(f"send notice of arrival at least {notice} hours ahead")
        else:
            steps.append("check that a berth is free with the marina office or Tern Bay Control")
        if name in ("C", "D", "E"):
            steps.append("confirm the pilot boarding time with the pilot station on VHF channel 9")
            steps.append(f"order {number_words(tugs)} tug{'s' if tugs > 1 else ''}, or "
                         f"{number_words(tugs + 1)} if the wind is above 20 knots")
        elif name == "B":
            steps.append("order a pilot if the vessel is a tanker or carries dangerous goods")
        steps.append("make Reports 1 to 4 on VHF channel 12" if name != "A" else
                     "call Tern Bay Control on VHF channel 12 before the breakwater heads")
        steps.append(f"keep to the speed limits of {HB_SPEEDS[0][1]} knots in the channel and "
                     f"{HB_SPEEDS[1][1]} knots in the Outer Harbour")
        words = ["First"] + ["Then", "Next", "After that"][: len(steps) - 2] + ["Finally"]
        body = " ".join(f"{w}, {st}." for w, st in zip(words, steps))
        paras.append(f"Arrival checklist for Class {name}. {body}")
    secs.append(("3A. Arrival Checklists", paras))

    # 4 -------------------------------------------------------------------------------------
    paras = [
        "Pilotage is compulsory for all vessels of Classes C, D and E, and for any vessel of "
        "Class B that is a tanker or carries dangerous goods. Class E vessels carry two pilots "
        "from Tern Alpha to the berth.",
        "The pilot boarding point is position Tern Alpha, 1.5 nautical miles south of the Gannet "
        "Light. Inbound vessels shall arrive at Tern Alpha at the time agreed with the pilot "
        "station and shall not enter the Gannet Channel before the pilot is on board.",
        "Pilots are requested through the vessel's agent at the same time as the notice of "
        "arrival. The pilot station confirms the boarding time on VHF channel 9 one hour before "
        "the vessel reaches Tern Alpha.",
        "The pilot ladder shall be rigged on the lee side, 1.5 m above the water, with a "
        "lifebuoy and a heaving line ready and an officer in attendance. The pilot launch "
        "approaches at about 8 knots, and the vessel should keep a steady course at that speed.",
        "Outbound pilots leave the vessel at Tern Alpha. In bad weather the pilot may leave "
        "inside the Gannet Channel if the master agrees and Tern Bay Control is told.",
        "A master who holds a pilotage exemption certificate for Tern Bay may navigate a Class C "
        "vessel without a pilot. Exemption certificates are never issued for tankers, gas "
        "carriers or vessels of Classes D and E.",
        "If no pilot can board because of weather, inbound vessels shall wait at Anchorage A or "
        "Anchorage B as directed by Tern Bay Control, and outbound vessels shall remain "
        "alongside.",
    ]
    secs.append(("4. Pilotage", paras))

    # 5 -------------------------------------------------------------------------------------
    t = HB_TIDE
    paras = [
        f"Tides at Tern Bay are semi-diurnal, with two high waters and two low waters each day. "
        f"Mean high water springs is {t['MHWS']} m and mean low water springs is {t['MLWS']} m "
        f"above chart datum, giving a mean spring range of {t['MHWS'] - t['MLWS']:.1f} m.",
        f"At neaps, mean high water is {t['MHWN']} m and mean low water is {t['MLWN']} m above "
        f"chart datum, giving a mean neap range of {t['MHWN'] - t['MLWN']:.1f} m. Strong "
        "southerly winds can raise the water level by up to 0.4 m above the prediction.",
        "In the Gannet Channel every vessel shall keep an under-keel clearance of at least 10 "
        "percent of its draught, and never less than 1.0 m. Alongside any berth the minimum "
        "under-keel clearance is 0.6 m at all states of the tide.",
        "Vessels with a draught of 11.2 m or less can transit the Gannet Channel at any state "
        "of the tide. Deeper vessels need a tidal window, and the greatest draught accepted for "
        "the channel is 14.0 m.",
        "A vessel with a draught of more than 11.2 m shall give the Harbour Master 24 hours' "
        "notice of its intended transit. Tern Bay Control confirms the tidal window on VHF "
        "channel 12 when the vessel makes Report 1.",
    ]
    for d in [11.5, 12.0, 12.5, 13.0, 13.5, 14.0]:
        need = _hb_required_tide(d)
        note = ("This height is reached on most tides, including neaps." if need <= t["MHWN"]
                else "This height is only reached near high water on spring tides, so the "
                     "window may not exist on neap days.")
        paras.append(
            f"A vessel with a draught of {d:.1f} m needs a height of tide of at least {need:.1f} m "
            f"to transit the Gannet Channel. {note} "
            + ch(["The transit shall be completed inside the window, not just begun.",
                  "Tern Bay Control will not clear the vessel to enter the channel until the "
                  "height of tide is sufficient.",
                  "The master should allow for squat, which increases at higher speed."])
        )
    paras.append(
        "Tidal streams in the Gannet Channel run north on the flood and south on the ebb, at up "
        "to 1.5 knots at springs. Across the breakwater entrance the stream can set a vessel "
        "towards the South Spit, and masters should allow for this when turning."
    )
    secs.append(("5. Tides and Under-Keel Clearance", paras))

    # 6 -------------------------------------------------------------------------------------
    berth_secs = []
    for n, quay, use, loa, depth, services, equipment, special in HB_BERTHS:
        cls = hb_class_of(loa)
        max_d = round(depth - 0.6, 1)
        ps = []
        ps.append(
            ch([f"Berth {n} lies on {quay} and is used mainly by {use}. ",
                f"Berth {n} is a {quay} berth for {use}. "])
            + f"It takes vessels up to {loa} m length overall, so ships of Class {cls} and "
            f"smaller may be allocated to it. The declared depth alongside is {depth:.1f} m below "
            "chart datum."
        )
        ps.append(
            f"The greatest draught permitted at Berth {n} at any state of the tide is {max_d:.1f} "
            f"m, which keeps the required clearance of 0.6 m under the keel at chart datum. "
            + ch([f"Masters shall state their arrival draught in the notice of arrival so that "
                  f"this limit can be checked before Berth {n} is allocated.",
                  f"The Harbour Master does not accept vessels deeper than this at Berth {n}, "
                  "whatever the predicted tide."])
        )
        swl = 100 if loa >= 200 else (60 if loa >= 100 else 25)
        spacing = 30 if loa >= 100 else 15
        ps.append(
            f"Bollards at Berth {n} are rated at {swl} tonnes and are spaced every {spacing} m. "
            + ch(["The fenders are cylindrical rubber units hung from the quay face.",
                  "The quay face is protected by rubber cone fenders with steel front panels.",
                  "The fenders are rubber cell units, which should be checked for damage after "
                  "every call."])
            + " "
            + ch(["Masters should plan at least three head lines, three stern lines and two "
                  "springs at each end for a stay of more than a day.",
                  "Mooring lines shall be tended while the vessel is alongside, especially when "
                  "the tide is running.",
                  "Mooring gangs are provided by the harbour and are ordered with the pilot."])
        )
        svc = (", ".join(services[:-1]) + " and " + services[-1]) if len(services) > 1 else (
            services[0] if services else "")
        ps.append(
            f"Berth {n} is equipped with {equipment}. "
            + (f"Services at the berth are {svc}." if services else
               f"There is no fresh water at Berth {n}, and vessels that need water shall take it "
               "before shifting to the berth.")
        )
        tugs = [c[4] for c in HB_CLASSES if c[0] == cls][0]
        ps.append(
            f"To reach Berth {n}, vessels {HB_QUAY_ROUTE[quay]}. "
            + (f"The largest vessels allowed here are Class {cls}, which need "
               f"{number_words(tugs)} tug{'s' if tugs != 1 else ''} for berthing."
               if tugs else f"Vessels using Berth {n} do not need tugs.")
        )
        ps.append(special + " " + ch([
            f"Crew and visitors reach Berth {n} through Gate {HB_GATES[quay]}.",
            f"Road access to Berth {n} is through Gate {HB_GATES[quay]}, which is open at all "
            "hours.",
            f"Gate {HB_GATES[quay]} is the nearest gate to Berth {n}, and all visitors shall "
            "show a pass there.",
        ]))
        hours = HB_WORK_HOURS[n]
        ps.append(
            f"Cargo and passenger work at Berth {n} runs {hours}. "
            + ch([f"The quay at Berth {n} is lit at night to the standard required for cargo "
                  "work.",
                  f"Vehicles may park on the quay apron at Berth {n} only in the marked bays.",
                  f"Stores for vessels at Berth {n} are delivered by road through Gate "
                  f"{HB_GATES[quay]}."])
        )
        berth_secs.append((f"6.{n} Berth {n} ({quay})", ps))
    secs.append(("6. Berths", [
        "Berths are allocated by the Harbour Master's office, normally 24 hours before arrival. "
        "A vessel shall not use any berth other than the one allocated to it, and shall shift "
        "berth only on the instruction of Tern Bay Control.",
        "The length and depth limits given for each berth are the greatest values the Harbour "
        "Master will accept. A vessel that exceeds any of them will be refused the berth, even "
        "if the berth is free.",
    ]))
    secs.extend(berth_secs)

    # 7 -------------------------------------------------------------------------------------
    paras = []
    for area, knots in HB_SPEEDS:
        paras.append(
            f"The speed limit in {area} is {knots} knots through the water. "
            + ch(["Vessels shall go slower when their wash could endanger small craft or "
                  "vessels alongside.",
                  "The limit applies to all vessels, including tugs and launches, unless they "
                  "are answering an emergency.",
                  "Patrol launches of the Harbour Authority record the speed of passing "
                  "vessels."])
        )
    paras += [
        "Overtaking in the Gannet Channel is not allowed for vessels of Classes D and E. Smaller "
        "vessels may overtake only with the agreement of the vessel being overtaken and of Tern "
        "Bay Control.",
        "An outbound vessel of Class D or E has priority in the Gannet Channel. Inbound vessels "
        "shall wait south of Tern Alpha until Tern Bay Control clears them to enter.",
        "Class A craft shall use the small-craft lane inside the harbour and shall cross the "
        "Outer Harbour only at right angles and only when no larger vessel is moving.",
        "Swimming, diving and fishing from the quays are not allowed anywhere in the harbour, "
        "except for diving work under a permit from the Harbour Master.",
    ]
    for name, where, depth_range, users in HB_ANCHORAGES:
        paras.append(
            f"{name} lies {where}, in depths of {depth_range}. It is intended for {users}. "
            + ch(["Vessels at anchor shall keep a listening watch on VHF channel 12.",
                  "Vessels at anchor shall keep their engines ready at one hour's notice.",
                  "Vessels shall anchor only in the position given by Tern Bay Control."])
        )
    secs.append(("7. Navigation in the Harbour", paras))

    # 8 -------------------------------------------------------------------------------------
    paras = []
    for channel, use in HB_VHF:
        paras.append(
            f"VHF channel {channel} is used for {use}. "
            + ch(["Messages should be short and use standard marine phrases.",
                  "Vessels shall use the vessel's name and the berth number in every call.",
                  "Tern Bay Control logs every call made on this channel."])
        )
    for name, when, what in HB_REPORTS:
        paras.append(f"{name} is made to Tern Bay Control on VHF channel 12 {when}. The report "
                     f"shall give {what}.")
    paras.append(
        "Outbound vessels make the same reports in reverse order, starting with a call on VHF "
        "channel 12 ten minutes before letting go and ending with a report when passing Tern "
        "Alpha."
    )
    secs.append(("8. Communications and Reporting", paras))

    # 9 -------------------------------------------------------------------------------------
    paras = [
        "Tern Bay Control broadcasts a weather summary on VHF channel 12 at 06:00, 12:00 and "
        "18:00 every day, and more often when a gale warning is in force.",
    ]
    for what, when in HB_WEATHER:
        paras.append(
            f"{cap_first(what)} when {when}. "
            + ch(["Work or movement resumes only when the Harbour Master says it may.",
                  "Masters should plan their arrival so that they are not caught by this limit "
                  "in the channel.",
                  "The limit is measured at the anemometer on the East Breakwater head."
                  if "wind" in when or "gusts" in when else
                  "The limit is judged by Tern Bay Control from the visibility at the "
                  "breakwater heads."])
        )
    paras.append(
        "When a storm warning is issued, vessels alongside shall double up their mooring lines, "
        "keep their engines ready and keep a watch on VHF channel 12 until the warning is "
        "cancelled."
    )
    secs.append(("9. Weather Limits", paras))

    # 10 ------------------------------------------------------------------------------------
    paras = [
        "Dangerous goods shall be declared in the notice of arrival, at least 48 hours before "
        "arrival, with their class, quantity and stowage position. Vessels carrying explosives "
        "are not accepted in the harbour.",
        "Flammable liquids in bulk are handled only at Berth 10, and liquefied gases only at "
        "Berth 11. Packaged dangerous goods may be handled at Berths 4 to 7 when the terminal "
        "has agreed a handling plan.",
        "During any transfer of flammable cargo, smoking and naked lights are forbidden within "
        "the safety zone, and the vessel shall fly flag B by day and show an all-round red light "
        "by night.",
        "A ship-shore safety checklist shall be completed and signed by the vessel and the "
        "terminal before a tanker or gas carrier starts to transfer cargo, and repeated every "
        "six hours.",
        "Leaking packages of dangerous goods shall be reported to Tern Bay Control at once. The "
        "area around the package is closed until the fire service has judged it safe.",
    ]
    secs.append(("10. Dangerous Goods", paras))

    # 11 ------------------------------------------------------------------------------------
    paras = [
        "Fresh water is supplied at Berths 1 to 8, 12, 13 and 14 at about 40 tonnes an hour. "
        "Water is ordered through the vessel's agent at least four hours before it is needed.",
        "Bunkering by barge is available at Berths 4 to 10, and by road tanker at Berths 12 and "
        "13. The Harbour Master shall be told 24 hours before bunkering starts, and a bunkering "
        "checklist shall be completed.",
        "Shore power is available at Berths 1, 2, 3 and 14. Vessels connected to shore power "
        "should stop their generators while alongside.",
        "Garbage skips are provided at every berth. Oily waste is collected by road tanker on 24 "
        "hours' notice, and sewage can be discharged ashore at Berths 1, 3 and 14.",
        "Mooring gangs, launches and tugs are booked through the pilot station. A launch service "
        "for crew runs from the Fishing Basin steps to Anchorages B and C between 07:00 and "
        "22:00.",
        "Ship chandlers, a crew welfare centre and a small clinic are located beside Gate 1 on "
        "North Quay.",
    ]
    secs.append(("11. Harbour Services", paras))

    # 12 ------------------------------------------------------------------------------------
    emergencies = [
        ("Fire on board or on the quay", [
            "raise the alarm on board and on the quay",
            "call Tern Bay Control on VHF channel 16 and then channel 12, or phone 555 0100",
            "stop all cargo work and bunkering at the berth",
            "send a crew member to Gate {gate} to guide the fire service",
            "prepare to let go only when the Harbour Master says so",
        ]),
        ("Oil spill", [
            "stop the transfer or the source of the spill at once",
            "report the spill to Tern Bay Control on VHF channel 12",
            "close the scuppers and contain oil on deck with the spill kit",
            "record the time, the estimated quantity and the type of oil",
            "give the response team access to the vessel and the quay",
        ]),
        ("Person overboard", [
            "throw a lifebuoy and shout person overboard",
            "keep the person in sight and point at them",
            "call Tern Bay Control on VHF channel 16",
            "stop any propellers turning near the person",
            "guide the harbour rescue launch to the position",
        ]),
        ("Collision or grounding", [
            "stop the engines if it is safe to do so",
            "report the incident to Tern Bay Control on VHF channel 16",
            "sound all tanks and check for water ingress",
            "look for pollution around the vessel",
            "stay in position until the Harbour Master gives instructions",
        ]),
        ("Medical emergency", [
            "give first aid and keep the casualty warm",
            "call Tern Bay Control on VHF channel 16 or phone 555 0100",
            "state the number of casualties and their condition",
            "send a crew member to Gate {gate} to meet the ambulance",
            "prepare the gangway so that a stretcher can be carried ashore",
        ]),
    ]
    paras = [
        "In any emergency, the first call goes to Tern Bay Control, on VHF channel 16 or on the "
        "harbour emergency line 555 0100. The harbour rescue launch is stationed at the Fishing "
        "Basin steps and can reach any berth within ten minutes.",
    ]
    for title, steps in emergencies:
        gate = rng.choice([1, 2, 3])
        words = ["First", "Second", "Third", "Fourth", "Fifth"]
        body = " ".join(f"{w}, {s.format(gate=gate)}." for w, s in zip(words, steps))
        paras.append(f"{title}. {body}")
        paras.append(
            f"After any {title.lower()}, the master shall send a written report to the Harbour "
            "Master within 24 hours. "
            + ch(["The report shall include the times of each action taken.",
                  "Photographs and the vessel's log extract should be attached.",
                  "A copy of the report is kept by the Harbour Authority for five years."])
        )
    paras.append(
        "Muster points for people on the quays are at Gate 1 for North Quay, Gate 2 for East "
        "Quay and the Inner Basin, Gate 3 for the South Terminal and Gate 4 for the Fishing "
        "Basin and the Marina."
    )
    secs.append(("12. Emergency Procedures", paras))

    # 13 ------------------------------------------------------------------------------------
    paras = [
        "The harbour has four gates. Gate 1 serves North Quay, Gate 2 serves East Quay and the "
        "Inner Basin, Gate 3 serves the South Terminal and Gate 4 serves the Fishing Basin and "
        "the Marina.",
        "Everyone entering the port area shall carry a harbour pass or a visitor pass. Crew "
        "members may use their seafarer identity document together with the vessel's crew "
        "list.",
        "Visitor passes are issued at the gatehouse for one day only. A visitor shall be met at "
        "the gate by the person they are visiting.",
        "Port security is reached on VHF channel 14. Unattended bags or vehicles shall be "
        "reported to the nearest gatehouse at once.",
        "Photography of the tanker berths and the gas berth is not allowed without the written "
        "consent of the terminal operator.",
    ]
    secs.append(("13. Security and Access", paras))

    # 14 ------------------------------------------------------------------------------------
    paras = [
        "No oil, garbage, sewage or cargo residue may be discharged into the water anywhere "
        "inside the harbour limits. Vessels shall use the reception facilities described in "
        "Section 11.",
        "Ballast water shall not be discharged inside the breakwaters unless it has been "
        "treated by an approved system, and the treatment record shall be shown on request.",
        "Vessels alongside shall keep engine and generator noise as low as practicable between "
        "23:00 and 07:00, especially at North Quay, which is close to the town.",
        "Hull cleaning in the water is not allowed. Hull painting and repairs on the outside of "
        "the hull are carried out only at Berth 12 with a permit.",
        "Seals rest on the rocks at Tern Point from June to August. Vessels using Anchorage C "
        "shall keep at least 200 m from the rocks during that period.",
    ]
    secs.append(("14. Environmental Rules", paras))

    # 15 ------------------------------------------------------------------------------------
    paras = [
        "The Marina at Berth 14 has 220 pontoon berths for vessels up to 23 m. Visiting yachts "
        "call the marina office on VHF channel 80 before passing the East Breakwater.",
        "The marina office is open from 08:00 to 20:00. Outside these hours, visitors may tie "
        "up on the reception pontoon and report to the office in the morning.",
        "Fishing vessels of up to 45 m use Berth 13 in the Fishing Basin. Boats landing a catch "
        "have priority between 04:00 and 09:00, and other boats shall keep the landing stretch "
        "clear in those hours.",
        "Ice is supplied by the ice plant on Berth 13 from 03:30. Orders should be placed with "
        "the plant the evening before.",
        "All Class A craft shall keep out of the Gannet Channel when a vessel of Class C or "
        "larger is transiting, and shall keep clear of the turning basin at all times.",
        "Sailing inside the harbour is allowed only in the Marina approach and only in daylight. "
        "At night, Class A craft shall motor and show the lights required by the collision "
        "regulations.",
    ]
    secs.append(("15. Small Craft and Fishing Vessels", paras))

    # 16 ------------------------------------------------------------------------------------
    paras = [
        "Harbour dues are charged for every call by a vessel of Class B or larger, according to "
        "its gross tonnage and the tariff in force on the day of arrival. Class A craft pay the "
        "marina or fishing basin fee instead.",
        "Pilotage, towage and mooring gangs are charged separately from harbour dues. A pilot "
        "ordered and then cancelled less than three hours before the boarding time is charged "
        "in full.",
        "A vessel that stays at a working berth for more than 24 hours after finishing cargo "
        "may be charged lay-by fees or asked to move to Berth 12.",
        "Charges are invoiced to the vessel's agent. Disputes about an invoice shall be raised "
        "with the Harbour Authority within 30 days.",
    ]
    secs.append(("16. Harbour Dues and Charges", paras))

    # 17 ------------------------------------------------------------------------------------
    paras = [
        "The examples below show how the rules of this handbook apply to particular vessels. "
        "The vessels are imaginary, but every conclusion follows from the rules above."
    ]
    paras += _hb_examples(rng, 92)
    secs.append(("17. Worked Examples", paras))

    # 18 ------------------------------------------------------------------------------------
    paras = [f"{term}: {definition}." for term, definition in HB_GLOSSARY]
    secs.append(("18. Glossary", paras))
    return secs


def build_harbor_handbook(rng: random.Random, heldout_chars: int = 12_000) -> tuple[str, str]:
    """Returns (training text, held-out text). Held-out paragraphs are drawn from the same
    generator and removed from the training text."""
    secs = _hb_sections(rng)
    all_paras = [(si, pi) for si, (_, paras) in enumerate(secs) for pi in range(len(paras))]
    # Short glossary lines and section openers stay in training.
    pool = [(si, pi) for si, pi in all_paras if len(secs[si][1][pi]) > 200]
    rng.shuffle(pool)
    held: set[tuple[int, int]] = set()
    size = 0
    for si, pi in pool:
        if size >= heldout_chars:
            break
        held.add((si, pi))
        size += len(secs[si][1][pi]) + 2

    title = f"{HB_NAME} Operations Handbook"
    train_blocks = [title, f"Issued by the {HB_AUTH}. Edition 4."]
    held_blocks = [f"{title}: Supplementary Notes",
                   "These notes expand on the handbook. They are numbered separately."]
    note_no = 0
    for si, (heading, paras) in enumerate(secs):
        train_blocks.append(heading)
        kept = [p for pi, p in enumerate(paras) if (si, pi) not in held]
        train_blocks.extend(kept)
        moved = [p for pi, p in enumerate(paras) if (si, pi) in held]
        if moved:
            note_no += 1
            topic = heading.split(" ", 1)[1]
            held_blocks.append(f"Supplementary note {note_no}, on {topic}")
            held_blocks.extend(moved)
    return "\n\n".join(train_blocks) + "\n", "\n\n".join(held_blocks) + "\n"


# --------------------------------------------------------------------------------------------
# 8. concise_preference (preference pairs: concise, direct answers over padded or evasive ones)
# --------------------------------------------------------------------------------------------

# Every question below is answered by the script (sums, conversions, weekdays, letter counts) or
# comes from a hand-written fact list. A question is a dict:
#   prompt, answer (the key fact as it appears in a correct reply), wrong (a plausible wrong
#   value), say (a one-sentence reply with "{x}" where the value goes), family.
# Pairs are then written in one of three ways (CP_PAIR_PLAN):
#   concise_vs_rambling  chosen: terse or one sentence; rejected: the same correct fact padded
#                        with filler sentences (always longer than the chosen reply)
#   correct_vs_wrong     chosen: correct; rejected: wrong, either terse (so the chosen reply is
#                        the longer one) or padded (the chosen one is shorter)
#   direct_vs_evasive    chosen: correct; rejected: no answer at all, either a curt brush-off
#                        (the chosen reply is the longer one) or a padded deflection (shorter)

CP_N = 400
# (pair type, chosen reply longer than the rejected one?, rows)
CP_PAIR_PLAN = [
    ("concise_vs_rambling", False, 240),
    ("correct_vs_wrong", True, 40),
    ("correct_vs_wrong", False, 40),
    ("direct_vs_evasive", True, 40),
    ("direct_vs_evasive", False, 40),
]
# question families and how many rows each contributes
CP_FAMILY_QUOTA = {
    "arithmetic": 70, "word_problem": 70, "conversion": 60, "weekday": 55, "month": 30,
    "spelling": 40, "letters": 35, "fact": 40,
}

CP_DAYS = TR_WEEKDAYS
CP_MONTHS = TR_MONTHS
CP_MONTH_DAYS = {"January": 31, "March": 31, "April": 30, "May": 31, "June": 30, "July": 31,
                 "August": 31, "September": 30, "October": 31, "November": 30, "December": 31}
CP_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
               "ninth", "tenth", "eleventh", "twelfth"]

# lead-ins put before some prompts (never before a prompt that has a colon of its own)
CP_PROMPT_LEADS = ["", "", "", "", "", "", "Quick question: ", "Quick one: ", "Just checking: ",
                   "Sorry if this is basic: ", "One more: "]

# (source unit, target unit, factor, smallest n, largest n)
CP_UNITS = [
    ("hours", "minutes", 60, 2, 12), ("minutes", "seconds", 60, 2, 15),
    ("days", "hours", 24, 2, 10), ("weeks", "days", 7, 2, 20), ("years", "months", 12, 2, 15),
    ("kilometres", "metres", 1000, 2, 25), ("kilograms", "grams", 1000, 2, 20),
    ("litres", "millilitres", 1000, 2, 12), ("metres", "centimetres", 100, 2, 30),
    ("feet", "inches", 12, 2, 12), ("pounds", "ounces", 16, 2, 10),
    ("centimetres", "millimetres", 10, 2, 50),
]
CP_UNIT_PHRASINGS = ["What is {n} {src} in {dst}?", "{n} {src} is how many {dst}?",
                     "How many {dst} is {n} {src}?", "Turn {n} {src} into {dst}, please."]
CP_UNIT_BACK_PHRASINGS = ["How many {src} is {m} {dst}?", "{m} {dst} is how many {src}?",
                          "What is {m} {dst} in {src}?"]

# (correct spelling, a common misspelling)
CP_SPELLINGS = [
    ("necessary", "necessery"), ("separate", "seperate"), ("definitely", "definately"),
    ("receive", "recieve"), ("accommodate", "accomodate"), ("calendar", "calender"),
    ("tomorrow", "tommorow"), ("beginning", "begining"), ("believe", "beleive"),
    ("embarrass", "embarass"), ("occurred", "occured"), ("rhythm", "rythm"),
    ("weird", "wierd"), ("library", "libary"), ("February", "Febuary"),
    ("Wednesday", "Wensday"), ("government", "goverment"), ("restaurant", "restaraunt"),
    ("business", "buisness"), ("environment", "enviroment"), ("friend", "freind"),
    ("piece", "peice"), ("until", "untill"), ("truly", "truely"), ("argument", "arguement"),
    ("address", "adress"), ("across", "accross"), ("apparent", "apparant"),
    ("committee", "commitee"), ("conscious", "concious"), ("existence", "existance"),
    ("grateful", "greatful"), ("immediately", "immediatly"), ("independent", "independant"),
    ("knowledge", "knowlege"), ("maintenance", "maintainance"), ("occasion", "ocassion"),
    ("possession", "posession"), ("privilege", "privelege"), ("recommend", "reccomend"),
    ("schedule", "schedual"), ("tongue", "tounge"), ("vacuum", "vaccum"),
    ("familiar", "familar"), ("guarantee", "garantee"),
]
CP_SPELLING_PHRASINGS = ["Which spelling is right: '{a}' or '{b}'?", "Is it '{a}' or '{b}'?",
                         "Should I write '{a}' or '{b}'?", "Which is correct, '{a}' or '{b}'?"]

CP_WORDS = [
    "window", "teapot", "bicycle", "orchard", "sandcastle", "umbrella", "lighthouse", "pumpkin",
    "calendar", "cinnamon", "hedgehog", "blueberry", "library", "volcano", "parachute",
    "microwave", "grandmother", "passport", "toothbrush", "avocado", "banana", "harbour",
    "satellite", "penguin", "cucumber", "marmalade", "wardrobe", "lemonade", "tortoise",
    "alphabet", "coconut", "dandelion", "envelope", "raspberry", "newspaper", "spaghetti",
    "kangaroo", "mississippi", "balloon", "committee", "coffee", "address", "staircase",
]
CP_LETTER_PHRASINGS = ["How many letters does '{w}' have?", "Count the letters in '{w}'.",
                       "'{w}' has how many letters?"]

CP_NAMES = ["Maria", "Tom", "Aisha", "Lukas", "Priya", "Sam", "Elena", "Kofi", "Hannah", "Diego",
            "Mei", "Oliver", "Fatima", "Jonas", "Chloe", "Ravi", "Ingrid", "Mateo", "Grace"]

# (prompt, answer, wrong answer, one-sentence reply with {x})
CP_FACTS = [
    ("How many legs does a spider have?", "eight", "six", "A spider has {x} legs."),
    ("How many legs does an insect have?", "six", "eight", "An insect has {x} legs."),
    ("How many arms does an octopus have?", "eight", "ten", "An octopus has {x} arms."),
    ("What colour do you get when you mix blue and yellow paint?", "green", "purple",
     "Blue and yellow make {x}."),
    ("What colour do you get when you mix red and white paint?", "pink", "orange",
     "Red and white make {x}."),
    ("What colour do you get when you mix red and yellow paint?", "orange", "brown",
     "Red and yellow make {x}."),
    ("What colour do you get when you mix red and blue paint?", "purple", "green",
     "Red and blue make {x}."),
    ("At what temperature does water freeze, in degrees Celsius?", "0", "10",
     "Water freezes at {x} °C."),
    ("At what temperature does water boil at sea level, in degrees Celsius?", "100", "90",
     "At sea level, water boils at {x} °C."),
    ("At what temperature does water boil at sea level, in degrees Fahrenheit?", "212", "200",
     "At sea level, water boils at {x} °F."),
    ("How many sides does a pentagon have?", "five", "six", "A pentagon has {x} sides."),
    ("How many sides does an octagon have?", "eight", "six", "An octagon has {x} sides."),
    ("How many players does a football team have on the pitch?", "eleven", "ten",
     "A football team has {x} players on the pitch."),
    ("How many strings does a standard violin have?", "four", "six",
     "A standard violin has {x} strings."),
    ("Which planet is closest to the Sun?", "Mercury", "Venus",
     "{x} is the planet closest to the Sun."),
    ("Which planet is known as the Red Planet?", "Mars", "Jupiter",
     "{x} is known as the Red Planet."),
    ("What is the largest planet in our solar system?", "Jupiter", "Saturn",
     "{x} is the largest planet in our solar system."),
    ("What is the largest ocean on Earth?", "Pacific", "Atlantic",
     "The {x} is the largest ocean on Earth."),
    ("What gas do plants take in from the air to make their food?", "carbon dioxide", "oxygen",
     "Plants take in {x} from the air to make their food."),
    ("How many zeros are in one million?", "six", "five", "One million has {x} zeros."),
    ("How many cards are in a standard deck, not counting jokers?", "52", "54",
     "A standard deck has {x} cards without jokers."),
    ("How many squares are on a chessboard?", "64", "81", "A chessboard has {x} squares."),
    ("How many keys does a standard piano have?", "88", "76", "A standard piano has {x} keys."),
    ("How many wheels does a tricycle have?", "three", "two", "A tricycle has {x} wheels."),
    ("Which month has the fewest days?", "February", "April",
     "{x} has the fewest days."),
    ("What is the chemical formula for water?", "H2O", "CO2",
     "The chemical formula for water is {x}."),
    ("How many years are in a millennium?", "1,000", "100", "A millennium is {x} years."),
    ("What do bees make from nectar?", "honey", "pollen", "Bees make {x} from nectar."),
    ("What is the largest animal on Earth?", "blue whale", "African elephant",
     "The {x} is the largest animal on Earth."),
    ("How many colours are usually listed in a rainbow?", "seven", "five",
     "A rainbow is usually listed with {x} colours."),
    ("How many degrees are in a right angle?", "90", "180", "A right angle is {x} degrees."),
    ("How many degrees are in a full circle?", "360", "180", "A full circle is {x} degrees."),
    ("What do the angles of a triangle add up to, in degrees?", "180", "360",
     "The angles of a triangle add up to {x} degrees."),
    ("About how many days does the Earth take to go around the Sun?", "365", "360",
     "The Earth takes about {x} days to go around the Sun."),
    ("In which direction does the Sun rise?", "east", "west", "The Sun rises in the {x}."),
    ("How many teeth does an adult usually have, wisdom teeth included?", "32", "28",
     "An adult usually has {x} teeth."),
    ("How many weeks are in a fortnight?", "two", "four", "A fortnight is {x} weeks."),
    ("What is frozen water called?", "ice", "steam", "Frozen water is called {x}."),
    ("What is the tallest mountain above sea level?", "Mount Everest", "K2",
     "{x} is the tallest mountain above sea level."),
    ("Which organ pumps blood around the body?", "heart", "liver",
     "The {x} pumps blood around the body."),
    ("What is the main language spoken in Brazil?", "Portuguese", "Spanish",
     "The main language in Brazil is {x}."),
    ("How many hours are in a week?", "168", "148", "A week has {x} hours."),
    ("What is the square root of 81?", "9", "8", "The square root of 81 is {x}."),
    ("How many lungs does a person have?", "two", "three", "A person has {x} lungs."),
]

# Filler for the padded replies. None of it states a fact, a number or a day, so a padded
# reply holds exactly the facts of the sentence it pads.
CP_RAMBLE_OPEN = [
    "Great question!", "Oh, that's a good one, and I'm really glad you asked.",
    "Thanks so much for reaching out with this.", "What a fun thing to think about!",
    "Sure, I'd be happy to help you with that.",
    "Let me take a moment to think about this properly.",
    "Ah, this is the kind of question that comes up more often than you might expect.",
    "Okay, so let's see.", "First of all, thank you for the question.",
    "That's a really interesting thing to ask about.",
]
CP_RAMBLE_MIDDLE = {
    "arithmetic": ["Numbers can be surprisingly tricky, so it's worth going slowly.",
                   "I like to work these out step by step, just to be safe.",
                   "Mental maths gets easier with practice, so don't worry if it feels hard."],
    "word_problem": ["Word problems are all about reading carefully and picking out the numbers.",
                     "It helps to picture the situation before doing any sums.",
                     "Everyday sums like this come up all the time, at home and at work."],
    "conversion": ["Units can be confusing, especially when different countries use different "
                   "systems.", "It's always a good idea to double-check conversions like this.",
                   "Converting between units is mostly a matter of remembering the right "
                   "factor."],
    "weekday": ["The days of the week go round in a cycle, which is handy to remember.",
                "It's easy to lose track of the days, especially around holidays.",
                "Counting days on your fingers works, but it's easy to slip by a day."],
    "month": ["The months can be hard to keep straight, and lots of people use a rhyme for "
              "them.", "Calendars have a long and surprisingly complicated history.",
              "It's easy to mix the months up when you're in a hurry."],
    "spelling": ["English spelling is famously inconsistent, so you're not alone in asking.",
                 "Lots of people trip over this word, even very good writers.",
                 "Spelling checkers help, but it's nice to know the answer yourself."],
    "letters": ["Counting letters sounds easy, but long words make it surprisingly fiddly.",
                "It's worth going through the word slowly, letter by letter.",
                "Words with doubled letters are where people usually slip up."],
    "fact": ["This is one of those things many of us learned at school and then forgot.",
             "It's a classic bit of general knowledge that comes up in quizzes.",
             "People often mix this up, so it's a fair thing to check."],
}
CP_RAMBLE_LEAD = ["So, to answer your question:", "Putting all of that together:",
                  "If I've got this right:", "After thinking it through:",
                  "Anyway, getting to the point:", "Here's what I would say:"]
CP_RAMBLE_CLOSE = [
    "I hope that helps!", "Let me know if you'd like me to explain any of that in more detail.",
    "Feel free to ask if anything is unclear.",
    "Happy to help with anything else you might be wondering about!",
    "Of course, it never hurts to double-check with another source.",
    "I hope this clears things up for you.",
]
CP_EVASIVE_LONG = [
    "It's hard to give a definite answer without knowing a bit more about why you're asking.",
    "I'd suggest checking a reliable reference, since I wouldn't want to mislead you.",
    "There are a few different ways to think about this, and it really depends on your "
    "situation.", "I'd rather not commit to a specific answer here.",
    "Honestly, it might be best to work it out yourself with a calculator or a calendar.",
    "Different sources might put it in different ways, so I'll leave that with you.",
    "This is the sort of thing that's worth looking up properly rather than taking my word "
    "for it.",
]
CP_EVASIVE_SHORT = ["Hard to say.", "Not sure.", "It depends.", "No idea.", "Who knows?",
                    "Can't say.", "Look it up.", "Why ask me?"]


def _cp_fmt(n: int) -> str:
    return f"{n:,}"


def _cp_wrong_number(rng: random.Random, x: int) -> int:
    while True:
        w = x + rng.choice([-10, -2, -1, 1, 2, 10])
        if w > 0 and w != x:
            return w


def _cp_arithmetic(rng: random.Random) -> dict:
    kind = rng.choice(["add", "sub", "mul", "div", "pct", "half", "double"])
    if kind == "add":
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        x = a + b
        prompt = rng.choice(["What's {a} + {b}?", "How much is {a} plus {b}?",
                             "Can you add up {a} and {b} for me?", "{a} + {b} = ?"])
        say = f"{a} + {b} = {{x}}."
    elif kind == "sub":
        a = rng.randint(30, 99)
        b = rng.randint(3, a - 10)
        x = a - b
        prompt = rng.choice(["What's {a} - {b}?", "How much is {a} take away {b}?",
                             "What do I get if I take {b} away from {a}?", "{a} - {b} = ?"])
        say = f"{a} - {b} = {{x}}."
    elif kind == "mul":
        a, b = rng.randint(3, 15), rng.randint(3, 12)
        x = a * b
        prompt = rng.choice(["How much is {a} times {b}?", "What's {a} multiplied by {b}?",
                             "What do you get when you multiply {a} by {b}?"])
        say = f"{a} times {b} is {{x}}."
    elif kind == "div":
        b, x = rng.randint(2, 12), rng.randint(3, 15)
        a = b * x
        prompt = rng.choice(["What's {a} divided by {b}?", "How much is {a} divided by {b}?",
                             "What do you get if you divide {a} by {b}?"])
        say = f"{a} divided by {b} is {{x}}."
    elif kind == "pct":
        a = rng.choice([10, 20, 25, 50, 75])
        b = rng.randint(2, 40) * (20 if a in (25, 75) else 10)
        x = a * b // 100
        prompt = rng.choice(["What is {a}% of {b}?", "How much is {a} percent of {b}?"])
        say = f"{a}% of {b} is {{x}}."
    elif kind == "half":
        a = b = 2 * rng.randint(12, 250)
        x = a // 2
        prompt = rng.choice(["What is half of {a}?", "How much is half of {a}?"])
        say = f"Half of {a} is {{x}}."
    else:
        a = b = rng.randint(13, 499)
        x = 2 * a
        prompt = rng.choice(["What's double {a}?", "What is {a} doubled?"])
        say = f"Double {a} is {{x}}."
    return {"prompt": prompt.format(a=a, b=b), "answer": _cp_fmt(x),
            "wrong": _cp_fmt(_cp_wrong_number(rng, x)), "say": say}


def _cp_clock(minutes: int) -> str:
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _cp_word_problem(rng: random.Random) -> dict:
    kind = rng.choice(["eggs", "pages", "bus", "tickets", "biscuits", "film", "train", "age",
                       "flour", "savings"])
    if kind == "eggs":
        a, b = rng.choice([6, 10, 12, 15, 18, 20, 24, 30]), rng.randint(2, 12)
        x = a * b
        prompt = f"A box holds {a} eggs. How many eggs are in {b} boxes?"
        say = f"{b} boxes hold {{x}} eggs."
    elif kind == "pages":
        a, b = rng.randint(5, 40), rng.randint(3, 14)
        x = a * b
        prompt = f"I read {a} pages a day. How many pages will I have read after {b} days?"
        say = f"After {b} days you will have read {{x}} pages."
    elif kind == "bus":
        a, b = rng.choice([5, 10, 12, 15, 20, 30]), rng.randint(2, 6)
        x = 60 * b // a
        prompt = f"A bus comes every {a} minutes. How many buses come in {b} hours?"
        say = f"{{x}} buses come in {b} hours."
    elif kind == "tickets":
        a, b = rng.randint(3, 25), rng.randint(2, 9)
        x = a * b
        cur = rng.choice(["£", "$", "€"])
        prompt = f"Tickets cost {cur}{a} each. How much do {b} tickets cost?"
        say = f"{b} tickets cost {cur}{{x}}."
        return {"prompt": prompt, "answer": _cp_fmt(x), "wrong": _cp_fmt(x + a), "say": say}
    elif kind == "biscuits":
        a = rng.randint(12, 40)
        b = rng.randint(2, a - 5)
        x = a - b
        thing = rng.choice(["biscuits", "sweets", "grapes", "crackers", "cherries"])
        prompt = f"I have {a} {thing} and eat {b}. How many are left?"
        say = f"You have {{x}} {thing} left."
    elif kind == "film":
        start = rng.randint(10 * 12, 21 * 12) * 5
        dur = rng.randint(17, 38) * 5
        x_s = _cp_clock(start + dur)
        prompt = (f"A film starts at {_cp_clock(start)} and runs for {dur} minutes. "
                  f"What time does it end?")
        wrong = _cp_clock(start + dur + rng.choice([-60, -10, 10, 60]))
        return {"prompt": prompt, "answer": x_s, "wrong": wrong, "say": "It ends at {x}."}
    elif kind == "train":
        start = rng.randint(6 * 12, 20 * 12) * 5
        x = rng.randint(5, 40) * 5
        prompt = (f"A train leaves at {_cp_clock(start)} and arrives at {_cp_clock(start + x)}. "
                  f"How many minutes is the journey?")
        say = "The journey takes {x} minutes."
        return {"prompt": prompt, "answer": str(x), "wrong": str(x + rng.choice([-10, 10, 20])),
                "say": say}
    elif kind == "age":
        name = rng.choice(CP_NAMES)
        a, b = rng.randint(4, 60), rng.randint(2, 25)
        x = a + b
        prompt = f"{name} is {a} years old. How old will {name} be in {b} years?"
        say = f"{name} will be {{x}}."
    elif kind == "flour":
        a, b = rng.choice([150, 200, 225, 250, 300, 350]), rng.randint(2, 6)
        x = a * b
        prompt = f"One cake needs {a} grams of flour. How much flour do {b} cakes need?"
        say = f"{b} cakes need {{x}} grams of flour."
    else:
        a, b = rng.randint(3, 30), rng.randint(3, 12)
        x = a * b
        cur = rng.choice(["£", "$", "€"])
        prompt = f"If I save {cur}{a} a week, how much will I have saved after {b} weeks?"
        say = f"After {b} weeks you will have saved {cur}{{x}}."
        return {"prompt": prompt, "answer": _cp_fmt(x), "wrong": _cp_fmt(x - a), "say": say}
    return {"prompt": prompt, "answer": _cp_fmt(x), "wrong": _cp_fmt(_cp_wrong_number(rng, x)),
            "say": say}


def _cp_conversion(rng: random.Random) -> dict:
    r = rng.random()
    if r < 0.2:
        c = rng.choice(range(-20, 45, 5))
        f = c * 9 // 5 + 32
        prompt = rng.choice(["What is {c} °C in Fahrenheit?", "{c} degrees Celsius is how many "
                             "degrees Fahrenheit?", "Convert {c} °C to Fahrenheit."])
        wrong = rng.choice([f + 2, f - 2, f + 10]) if c * 2 + 30 == f else c * 2 + 30
        return {"prompt": prompt.format(c=c), "answer": str(f), "wrong": str(wrong),
                "say": f"{c} °C is {{x}} °F."}
    src, dst, factor, lo, hi = rng.choice(CP_UNITS)
    n = rng.randint(lo, hi)
    if r < 0.75:
        x = n * factor
        prompt = rng.choice(CP_UNIT_PHRASINGS).format(n=n, src=src, dst=dst)
        say = f"{n} {src} is {{x}} {dst}."
        wrong = n * factor + rng.choice([-factor, factor]) if n > 2 else (n + 1) * factor
    else:
        x, m = n, _cp_fmt(n * factor)
        prompt = rng.choice(CP_UNIT_BACK_PHRASINGS).format(m=m, src=src, dst=dst)
        say = f"{m} {dst} is {{x}} {src}."
        wrong = n + rng.choice([-1, 1])
    return {"prompt": prompt, "answer": _cp_fmt(x), "wrong": _cp_fmt(wrong), "say": say}


def _cp_weekday(rng: random.Random) -> dict:
    d = rng.randrange(7)
    n = rng.randint(2, 40)
    kind = rng.choice(["after", "after", "ago", "ago", "tomorrow", "today", "next"])
    if kind == "after":
        x = (d + n) % 7
        prompt = rng.choice([
            "If today is {d}, what day will it be in {n} days?",
            "In {n} days, what day of the week will it be if today is {d}?",
            "It's {d} today. What day is it {n} days from now?",
            "What day of the week is {n} days after a {d}?",
        ])
        say = f"In {n} days it will be {{x}}."
    elif kind == "ago":
        x = (d - n) % 7
        prompt = rng.choice([
            "If today is {d}, what day was it {n} days ago?",
            "{n} days ago, what day was it, if today is {d}?",
            "It's {d} today. What day was it {n} days ago?",
            "What day of the week is {n} days before a {d}?",
        ])
        say = f"{n} days ago it was {{x}}."
    elif kind == "tomorrow":
        x = (d + 2) % 7
        prompt = "If yesterday was {d}, what day is tomorrow?"
        say = "Tomorrow is {x}."
    elif kind == "today":
        x = (d - 2) % 7
        prompt = "If the day after tomorrow is {d}, what day is it today?"
        say = "Today is {x}."
    else:
        x = (d + 1) % 7
        prompt = rng.choice(["Which day comes right after {d}?", "What day follows {d}?"])
        say = f"{{x}} comes after {CP_DAYS[d]}."
    # never the day in the prompt itself ("Tuesday comes after Tuesday")
    wrong = (x + 1) % 7 if kind == "next" else (x + rng.choice([-1, 1])) % 7
    return {"prompt": prompt.format(d=CP_DAYS[d], n=n), "answer": CP_DAYS[x],
            "wrong": CP_DAYS[wrong], "say": say}


def _cp_month(rng: random.Random) -> dict:
    kind = rng.choice(["days", "after", "before", "later", "ordinal"])
    m = rng.randrange(12)
    if kind == "days":
        name = rng.choice(sorted(CP_MONTH_DAYS))
        x = CP_MONTH_DAYS[name]
        prompt = rng.choice(["How many days does {m} have?", "How many days are there in {m}?"])
        return {"prompt": prompt.format(m=name), "answer": str(x), "wrong": str(61 - x),
                "say": f"{name} has {{x}} days."}
    if kind == "ordinal":
        prompt = f"Which month is the {CP_ORDINALS[m]} month of the year?"
        x, say = m, f"The {CP_ORDINALS[m]} month is {{x}}."
    elif kind == "after":
        prompt = f"Which month comes after {CP_MONTHS[m]}?"
        x, say = (m + 1) % 12, f"{{x}} comes after {CP_MONTHS[m]}."
    elif kind == "before":
        prompt = f"Which month comes before {CP_MONTHS[m]}?"
        x, say = (m - 1) % 12, f"{{x}} comes before {CP_MONTHS[m]}."
    else:
        n = rng.randint(2, 11)
        prompt = f"What month is it {n} months after {CP_MONTHS[m]}?"
        x, say = (m + n) % 12, f"{n} months after {CP_MONTHS[m]} it is {{x}}."
    # never the month in the prompt itself ("January comes after January")
    step = {"after": 1, "before": -1}.get(kind) or rng.choice([-1, 1])
    wrong = (x + step) % 12
    return {"prompt": prompt, "answer": CP_MONTHS[x], "wrong": CP_MONTHS[wrong], "say": say}


def _cp_spelling(rng: random.Random, word: str, miss: str) -> dict:
    a, b = (word, miss) if rng.random() < 0.5 else (miss, word)
    prompt = rng.choice(CP_SPELLING_PHRASINGS).format(a=a, b=b)
    return {"prompt": prompt, "answer": word, "wrong": miss,
            "say": "The correct spelling is '{x}'."}


def _cp_letters(rng: random.Random, word: str) -> dict:
    kind = rng.choice(["length", "vowels", "letter"])
    if kind == "length":
        x = len(word)
        prompt = rng.choice(CP_LETTER_PHRASINGS).format(w=word)
        say = f"The word '{word}' has {{x}} letters."
    elif kind == "vowels":
        x = sum(c in "aeiou" for c in word)
        prompt = f"How many vowels are in '{word}'?"
        say = f"The word '{word}' has {{x}} vowels."
    else:
        counts = collections.Counter(word)
        letter = rng.choice(sorted(c for c, k in counts.items() if k == max(counts.values())))
        x = counts[letter]
        prompt = f"How many times does the letter '{letter}' appear in '{word}'?"
        say = f"The letter '{letter}' appears {{x}} times in '{word}'."
        if x == 1:
            say = f"The letter '{letter}' appears {{x}} time in '{word}'."
    wrong = x + rng.choice([-1, 1]) if x > 1 else x + 1
    return {"prompt": prompt, "answer": str(x), "wrong": str(wrong), "say": say}


def _cp_questions(rng: random.Random) -> list[dict]:
    """Candidate questions of every family: many random draws for the computed families, each
    spelling pair, letter word and fact once, in random order."""
    out: list[dict] = []
    makers = {
        "arithmetic": _cp_arithmetic, "word_problem": _cp_word_problem,
        "conversion": _cp_conversion, "weekday": _cp_weekday, "month": _cp_month,
    }
    for family, maker in makers.items():
        for _ in range(CP_FAMILY_QUOTA[family] * 30):
            out.append(dict(maker(rng), family=family))
    for word, miss in rng.sample(CP_SPELLINGS, len(CP_SPELLINGS)):
        out.append(dict(_cp_spelling(rng, word, miss), family="spelling"))
    for word in rng.sample(CP_WORDS, len(CP_WORDS)):
        out.append(dict(_cp_letters(rng, word), family="letters"))
    for prompt, answer, wrong, say in rng.sample(CP_FACTS, len(CP_FACTS)):
        out.append({"prompt": prompt, "answer": answer, "wrong": wrong, "say": say,
                    "family": "fact"})
    return out


def _cp_mentions(text: str, value: str) -> bool:
    """Whether ``value`` occurs in ``text`` as a whole word (case-insensitive)."""
    return re.search(r"(?<!\w)" + re.escape(value.lower()) + r"(?!\w)", text.lower()) is not None


def _cp_with_lead(rng: random.Random, prompt: str) -> str:
    """Sometimes put a short lead-in ("Quick question: ") before the prompt."""
    lead = rng.choice(CP_PROMPT_LEADS)
    if not lead or ":" in prompt:
        return prompt
    first = prompt.split()[0].strip("',?")
    if first in CP_DAYS or first in CP_MONTHS or first in CP_NAMES or not first[:1].isalpha():
        return lead + prompt
    return lead + prompt[:1].lower() + prompt[1:]


def _cp_terse(value: str) -> str:
    return cap_first(value) + "."


def _cp_padded(rng: random.Random, family: str, core: str | None) -> str:
    """Filler sentences around ``core`` (None: a deflection that answers nothing)."""
    parts = [rng.choice(CP_RAMBLE_OPEN)]
    parts += rng.sample(CP_RAMBLE_MIDDLE[family], rng.choice([1, 1, 2]))
    if core is None:
        parts += rng.sample(CP_EVASIVE_LONG, rng.choice([1, 2]))
    else:
        parts += [rng.choice(CP_RAMBLE_LEAD), core]
    parts.append(rng.choice(CP_RAMBLE_CLOSE))
    return " ".join(parts)


def _cp_pair(rng: random.Random, q: dict, pair_type: str, chosen_longer: bool) -> dict | None:
    """One preference row for question ``q``, or None when this draw breaks a rule."""
    fact = q["say"].format(x=q["answer"])
    wrong_fact = q["say"].format(x=q["wrong"])
    terse = _cp_terse(q["answer"])
    if pair_type == "concise_vs_rambling":
        chosen = rng.choice([terse, fact])
        rejected = _cp_padded(rng, q["family"], fact)
    elif chosen_longer:
        chosen = fact
        if pair_type == "correct_vs_wrong":
            rejected = _cp_terse(q["wrong"])
        else:
            short = [e for e in CP_EVASIVE_SHORT if len(e) < len(fact)]
            if not short:
                return None
            rejected = rng.choice(short)
    else:
        chosen = rng.choice([terse, fact])
        rejected = _cp_padded(rng, q["family"],
                              wrong_fact if pair_type == "correct_vs_wrong" else None)
    if (len(chosen) > len(rejected)) != chosen_longer or len(chosen) == len(rejected):
        return None
    if not _cp_mentions(chosen, q["answer"]):
        return None
    if _cp_mentions(rejected, q["answer"]) != (pair_type == "concise_vs_rambling"):
        return None
    if pair_type == "correct_vs_wrong" and not _cp_mentions(rejected, q["wrong"]):
        return None
    return {"answer": q["answer"], "chosen": chosen, "pair_type": pair_type,
            "prompt": _cp_with_lead(rng, q["prompt"]), "rejected": rejected}


def build_concise_preference(rng: random.Random, avoid: list[str]) -> list[dict]:
    """Family quotas and pair types are fixed (CP_FAMILY_QUOTA, CP_PAIR_PLAN); a prompt that is
    an exact or near duplicate of a kept prompt, or of any text in ``avoid`` (the held-out probe
    questions and the replay instructions), is skipped."""
    plan = [(t, longer) for t, longer, k in CP_PAIR_PLAN for _ in range(k)]
    assert len(plan) == CP_N == sum(CP_FAMILY_QUOTA.values())
    rng.shuffle(plan)
    others = NearDuplicateGuard()
    for text in avoid:
        others.add(text)
    guard = NearDuplicateGuard()
    by_family: dict[str, list[dict]] = {}
    for q in _cp_questions(rng):
        by_family.setdefault(q["family"], []).append(q)
    families = [f for f, k in CP_FAMILY_QUOTA.items() for _ in range(k)]
    rng.shuffle(families)
    rows = []
    for (pair_type, longer), family in zip(plan, families):
        pool = by_family[family]
        while True:
            if not pool:
                raise RuntimeError(f"not enough distinct {family} questions")
            q = pool.pop()
            row = None
            for _ in range(20):
                row = _cp_pair(rng, q, pair_type, longer)
                if row is not None:
                    break
            if row is None or others.clashes(row["prompt"]) or not guard.admit(row["prompt"]):
                continue
            rows.append(row)
            break
    return rows


# --------------------------------------------------------------------------------------------
# 9. support_chats (multi-turn support conversations, OpenAI messages and ShareGPT formats)
# --------------------------------------------------------------------------------------------

# Each scenario is a short script for one topic (the five ticket_routing labels):
#   u1      the customer's first message, which names a reference (order number, invoice,
#           error code, serial number, e-mail address or username)
#   a1      the first reply; it always starts "Topic: <topic>." and asks one question
#   replies (u2, a2) pairs: the customer's answer and the reply that resolves the ticket; a2
#           reuses the reference from u1 (which u2 does not repeat), so the history matters
#   extras  (u, a) follow-up pairs; the conversation may add one or two (3 or 4 user turns)
#   ref     how later replies name the reference (used by the closing reply)
# Templates use the [a|b] and {slot} syntax of ticket_routing (_tr_expand); slots come from
# _tr_slots plus the few below (_sc_slots). Every text here was written for these chats; the
# build rejects any user turn that is an exact or near duplicate of a ticket_routing message.

SC_SHOP = "Brambleway"
SC_SYSTEM = [
    f"You are the customer support assistant for {SC_SHOP}, an online shop. Start your first "
    "reply with the ticket topic (billing, shipping, technical, account or refund), then help "
    "the customer in short, clear steps.",
    f"You handle support chats for {SC_SHOP}. Begin by naming the topic: billing, shipping, "
    "technical, account or refund. Keep answers short and refer back to the details the "
    "customer gave.",
    f"Support assistant for {SC_SHOP}. First line: 'Topic: <topic>.' Then resolve the ticket "
    "politely and briefly.",
    f"You are a helpful, concise support agent for the {SC_SHOP} online shop.",
]
SC_SYSTEM_SHARE = 0.4  # share of conversations that start with a system message
SC_PER_TOPIC = 60
# number of user turns: 2 (core only), 3 (one extra pair), 4 (one extra pair and a closing)
SC_TURNS = [2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4]

SC_SCENARIOS = {
    "billing": [
        {
            "ref": "order {order}",
            "u1": "[Hi, |Hello, |]I [just noticed|can see] [two payments|a double charge] of "
                  "{amount} for order #{order} on my [card|bank statement].[ Can you check?| "
                  "What happened?|]",
            "a1": "Topic: billing. [Sorry about that|Thanks for flagging this|I'm sorry for the "
                  "trouble]. [To find the payments|So I can match the payments], could you tell "
                  "me the last four digits of the card?",
            "replies": [
                ("[It's the card ending in {last4}.|The card ends in {last4}.|Ending {last4}.]",
                 "Thanks. I can see both {amount} payments for order {order} on the card ending "
                 "in {last4}. I've [cancelled|reversed] the second one, and it [will disappear|"
                 "should drop off your statement] within {n_work} working days."),
            ],
            "extras": [
                ("[Will I get|Can I have] [something|a confirmation] in writing?",
                 "Yes. A confirmation for order {order} is on its way to the email address on "
                 "your account."),
                ("[Why did it happen|How did that happen] in the first place?",
                 "The payment for order {order} was retried after a timeout, and both attempts "
                 "went through. The retry has been fixed on our side."),
            ],
        },
        {
            "ref": "invoice {invoice}",
            "u1": "Could you [add|put] [our|my company's] [VAT number|company details] [on|to] "
                  "invoice {invoice}?[ Our accountant [needs|has asked for] it.| It's for my "
                  "expenses claim.|]",
            "a1": "Topic: billing. [Happy to help|Of course|Certainly]. [What should the invoice "
                  "show exactly?|Please send the details exactly as they should appear.]",
            "replies": [
                ("[{company}, VAT number {vat}.|Company: {company}. VAT: {vat}.|It should say "
                 "{company}, VAT {vat}.]",
                 "Done. Invoice {invoice} now shows {company} and VAT number {vat}. [A new PDF "
                 "is in the Billing section of your account.|I've emailed you the corrected "
                 "PDF.]"),
            ],
            "extras": [
                ("[Can you do the same for|What about] my [older|earlier] invoices?",
                 "Yes. I've added the same details to every invoice before {invoice} as well; "
                 "you'll find them under Billing."),
                ("Will [future|new] invoices show it [automatically|too]?",
                 "Yes, the company details from invoice {invoice} are now saved on your account, "
                 "so every new invoice will show them."),
            ],
        },
        {
            "ref": "invoice {invoice}",
            "u1": "My {plan} [plan|subscription] [is supposed to|should] cost {amount2}[ a month|"
                  "], but invoice {invoice} [says|charges me] {amount}.",
            "a1": "Topic: billing. [Let me look into it|I'll check that for you|Thanks, I'll "
                  "check the price]. Did you [add any users|change anything on the plan] "
                  "[recently|this month]?",
            "replies": [
                ("[No, nothing changed.|Not that I know of.|No, it's still just me.]",
                 "Thanks. The amount on invoice {invoice} was wrong: your {plan} plan costs "
                 "{amount2}. I've credited the difference, and your next invoice will be "
                 "{amount2} again."),
                ("[We added {name2} as a user {time}.|Yes, one new user {time}.]",
                 "That explains part of it, but invoice {invoice} charged for the new user twice. "
                 "I've credited one of those charges back to your account."),
            ],
            "extras": [
                ("[When will I see the credit?|How long does the credit take?]",
                 "It's already on your account, and it will be taken off the invoice after "
                 "{invoice} automatically."),
                ("[Can I get a corrected invoice?|Could you send a fixed invoice?]",
                 "Yes. I've issued a corrected copy of {invoice} and emailed it to you."),
            ],
        },
        {
            "ref": "the card ending in {last4b}",
            "u1": "[How do I|Can I] [switch|change] the card [for|on] my {plan} [plan|"
                  "subscription]? [The old one, ending {last4b}, expires [this month|soon|at "
                  "the end of {month}]|My card ending {last4b} was replaced [this month|{time}]].",
            "a1": "Topic: billing. [You can do that under Settings, then Payment methods|Sure, "
                  "I can help with that]. Would you like me to send you a secure link to add "
                  "the new card?",
            "replies": [
                ("[Yes please.|Yes, send it over.|That would be great.]",
                 "I've sent the link to your email. Once the new card is added, the card ending "
                 "in {last4b} will be removed from your {plan} plan[, and your billing date stays "
                 "the same|]."),
            ],
            "extras": [
                ("[What if the next payment goes out before I add it?|Will I be charged on the "
                 "old card in the meantime?]",
                 "Nothing will be taken from the card ending in {last4b} while the link is open; "
                 "we'll wait for the new card."),
                ("[Does the link expire?|How long is the link valid?]",
                 "It's valid for 24 hours. If it runs out, reply here and I'll send a new one."),
            ],
        },
    ],
    "shipping": [
        {
            "ref": "order {order}",
            "u1": "[Where is|What's happening with] my order #{order}? It was [due|meant to "
                  "arrive] {time} and [there's no sign of it|nothing has come].",
            "a1": "Topic: shipping. [Sorry it's late|I'm sorry for the wait|Let me check that "
                  "for you]. Could you confirm the delivery address on the order?",
            "replies": [
                ("[It's {house} {street}, {city}.|{house} {street} in {city}.|{house} {street}, "
                 "{city}, same as always.]",
                 "Thanks. Order {order} is [with the courier|at the {city} depot] and is now "
                 "booked for delivery to {house} {street} {time_future}. The tracking number is "
                 "{tracking}."),
            ],
            "extras": [
                ("Can they leave it with a neighbour if I'm out?",
                 "Yes, I've added a note to order {order} allowing delivery to a neighbour."),
                ("[And if it doesn't turn up then?|What if it still doesn't come?]",
                 "Reply in this chat and I'll send a replacement or a refund for order {order}, "
                 "whichever you prefer."),
            ],
        },
        {
            "ref": "order {order}",
            "u1": "I [just|] placed order #{order} [but|and] [used my old address|typed the "
                  "wrong address]. Can I [change|fix] it?",
            "a1": "Topic: shipping. [Yes, as long as it hasn't left the warehouse|Yes, it "
                  "hasn't been dispatched yet, so there's time]. What's the new address?",
            "replies": [
                ("{house} {street}, {city}[, please|].",
                 "Done. Order {order} will now go to {house} {street}, {city}. You'll get a new "
                 "confirmation email [in a few minutes|shortly]."),
            ],
            "extras": [
                ("Does that change the delivery date?",
                 "No, order {order} is still due {time_future}."),
                ("[Can you update my saved address too?|Please make that my default address as "
                 "well.]",
                 "Yes, {house} {street} is now the default address on your account."),
            ],
        },
        {
            "ref": "order {order}",
            "u1": "Tracking says order #{order} was delivered {time}, but [I haven't got it|it "
                  "isn't here|nothing arrived].",
            "a1": "Topic: shipping. [I'm sorry, that's frustrating|Sorry about that]. Have you "
                  "checked [with your neighbours|around the building|your usual safe place]?",
            "replies": [
                ("[Yes, no one has it.|I asked next door and they have nothing.|Yes, I've "
                 "looked everywhere.]",
                 "Thanks for checking. I've opened an investigation with the courier for order "
                 "{order} (ticket {ticket}). If it isn't found within {n_work} working days, we'll "
                 "send a replacement [at no cost|free of charge]."),
            ],
            "extras": [
                ("[Do I need to do anything else?|Is there anything I should do meanwhile?]",
                 "No. The courier may call you about order {order}; otherwise we'll update you "
                 "by email."),
                ("Could the replacement come by express?",
                 "Yes, if order {order} isn't found, the replacement will go out by express "
                 "delivery at no extra cost."),
            ],
        },
        {
            "ref": "order {order}",
            "u1": "My parcel to {country} (order #{order}) has been [stuck|held] in customs "
                  "[since {since}|for {n_days} days].",
            "a1": "Topic: shipping. [Thanks for letting us know|Let me help with that]. Have you "
                  "had a [letter|message] from customs asking for a fee or documents?",
            "replies": [
                ("[Yes, they want {small} in import fees.|Yes, a fee of {small}.]",
                 "Thanks. Import fees on order {order} should have been prepaid, so don't pay "
                 "the {small}. I've asked the courier to release the parcel and charge the fee "
                 "to us."),
                ("[No, nothing at all.|No, I haven't heard anything.]",
                 "Thanks. I've sent the customs invoice for order {order} to the courier so they "
                 "can release it. You should hear from them within {n_work} working days."),
            ],
            "extras": [
                ("[Will this happen every time I order?|Is this going to happen again?]",
                 "It shouldn't. The paperwork for order {order} was missing a tariff code, which "
                 "we've now added for all shipments to {country}."),
            ],
        },
    ],
    "technical": [
        {
            "ref": "error {code}",
            "u1": "{app} [crashes|closes] with error {code} [when I open|every time I go to] the "
                  "{screen} [screen|page].",
            "a1": "Topic: technical. [Sorry about that|Thanks for the details|Let's get that "
                  "fixed]. Which version of the app [are you on|do you have]? [You'll find it "
                  "under Settings, then About.|It's shown in Settings under About.]",
            "replies": [
                ("[Version {version}.|It says {version}.|{version}, I think.]",
                 "Thanks. Error {code} in version {version} is a known [bug|issue] on the "
                 "{screen} screen. [Please update to the latest version|Updating to the newest "
                 "release fixes it]; if it still happens, clear the app's cache and sign in "
                 "again."),
            ],
            "extras": [
                ("[I updated and it still crashes.|Updating didn't help.]",
                 "Thanks for trying. I've passed error {code} to our developers with your "
                 "account details; we'll email you when the fix is out."),
                ("[Will I lose any data?|Is my data safe?]",
                 "No. Error {code} only affects the {screen} screen; your data is stored on our "
                 "servers and isn't touched."),
            ],
        },
        {
            "ref": "order {order}",
            "u1": "The {device} I bought (order #{order}) won't connect to my Wi-Fi[ since I set "
                  "it up| after I changed my router|].",
            "a1": "Topic: technical. [Let's sort that out|I can help with that]. Is your network "
                  "on 2.4 GHz or 5 GHz?",
            "replies": [
                ("[I'm not sure.|5 GHz, I think.|It's a mix of both.]",
                 "The {device} from order {order} only connects to 2.4 GHz. [In your router "
                 "settings, turn on the 2.4 GHz band|Switch on the 2.4 GHz band on your router], "
                 "then hold the reset button for ten seconds and set it up again."),
            ],
            "extras": [
                ("[That worked, thanks!|It's connected now.]",
                 "Great. The {device} from order {order} will now update itself overnight, so "
                 "you don't need to do anything else."),
                ("[It still won't connect.|No luck, same problem.]",
                 "Thanks for trying. The {device} from order {order} may be faulty, so I've "
                 "arranged a free replacement; you'll get a return label by email."),
            ],
        },
        {
            "ref": "serial number {serial}",
            "u1": "The update on my {device} has been stuck at {pct}% for {n_hours} hours. [The "
                  "serial number is|Serial:] {serial}.",
            "a1": "Topic: technical. [Sorry it's stuck|That shouldn't take so long]. Is the "
                  "{device} still plugged in and showing a light?",
            "replies": [
                ("[Yes, a blue light.|It's plugged in and the light is orange.|Yes, it's on the "
                 "charger.]",
                 "Thanks. I've restarted the update for serial number {serial} from our side. "
                 "Unplug the {device} for thirty seconds, plug it back in, and it should finish "
                 "within twenty minutes."),
            ],
            "extras": [
                ("[Should I do anything if it gets stuck again?|What if it freezes again?]",
                 "Reply here and quote serial number {serial}; we can push the update again or "
                 "replace the unit."),
                ("[Can I use it while it updates?|Is it safe to use in the meantime?]",
                 "Yes, but keep it plugged in until the update for {serial} finishes."),
            ],
        },
        {
            "ref": "{email}",
            "u1": "[Photos|Files|Notes] I add on my {phone} [don't show up|no longer appear] in "
                  "{app}[ since {since}|]. My account email is {email}.",
            "a1": "Topic: technical. [Let's take a look|Thanks for the details]. Are both "
                  "devices [using|on] the same Wi-Fi [network|] right now?",
            "replies": [
                ("[Yes, they are.|Yes, same network.|The phone is on mobile data.]",
                 "Thanks. Syncing for {email} was paused on our side after a failed update. "
                 "I've turned it back on, so everything should appear within [an hour|a few "
                 "minutes]."),
            ],
            "extras": [
                ("[Will the old ones come back too?|What about the ones I added last week?]",
                 "Yes, everything saved under {email} since the pause will sync once the "
                 "backlog clears."),
                ("[Do I need to update the app?|Should I reinstall anything?]",
                 "No need. The fix for {email} was on our servers; the app you have is fine."),
            ],
        },
    ],
    "account": [
        {
            "ref": "{email}",
            "u1": "I [asked for|requested] a password reset for {email} [twice|three times|"
                  "{n_times}] but no email [has arrived|came through].",
            "a1": "Topic: account. [Sorry about that|Let's get you back in]. Have you checked "
                  "your [spam folder|spam or junk folder]?",
            "replies": [
                ("[Yes, it's not there.|Yes, nothing in spam either.|I've checked, nothing.]",
                 "Thanks. Emails to {email} were being blocked after a bounce. I've cleared the "
                 "block and sent a new reset link; it's valid for 30 minutes."),
            ],
            "extras": [
                ("[Got it, I'm back in.|That worked, I've reset it.]",
                 "Good to hear. Emails to {email} will keep arriving normally from now on."),
                ("[Could you also turn on two-factor sign-in?|Can I add extra security?]",
                 "You can turn on two-factor sign-in under Security; the codes will go to "
                 "{email} or to an authenticator app."),
            ],
        },
        {
            "ref": "{email2}",
            "u1": "Please change the email on my account from {email} to {email2}.",
            "a1": "Topic: account. [Sure|Happy to help]. For security, could you confirm the "
                  "date of birth on the account?",
            "replies": [
                ("{date} {birth_year}.",
                 "Thanks, that matches. Your sign-in email is now {email2}, and a confirmation "
                 "has gone to {email} as well."),
            ],
            "extras": [
                ("Will my order history stay?",
                 "Yes, all your orders stay on the account; only the sign-in changes to "
                 "{email2}."),
                ("[Do I need a new password?|Does my password change?]",
                 "No, your password stays the same; just sign in with {email2} from now on."),
            ],
        },
        {
            "ref": "{user}",
            "u1": "My account {user} is locked after [too many|a few wrong] password attempts[ "
                  "this morning| {time}|].",
            "a1": "Topic: account. [I can help with that|No problem]. [To unlock it|Before I "
                  "unlock it], can you tell me the last four digits of the card on file?",
            "replies": [
                ("[{last4}.|It ends in {last4}.|The card ends {last4}.]",
                 "Thanks. I've unlocked {user}. You can sign in now; [please choose a new "
                 "password|we recommend turning on two-factor sign-in] [when you do|to keep it "
                 "safe]."),
            ],
            "extras": [
                ("[Was someone trying to get in?|Could someone have tried to break in?]",
                 "The failed attempts on {user} all came from your usual device, so it looks "
                 "like mistyped passwords rather than anyone else."),
                ("[How do I stop this happening again?|Can this be avoided next time?]",
                 "A password manager helps. You can also turn on two-factor sign-in for {user} "
                 "under Security."),
            ],
        },
        {
            "ref": "{email}",
            "u1": "I'd like to [close|delete] my account ({email})[ and remove my data| for "
                  "good|].",
            "a1": "Topic: account. [Sorry to see you go|I can arrange that]. Would you like a "
                  "copy of your order history before it's deleted?",
            "replies": [
                ("[No thanks.|No, that's fine.]",
                 "All right. I've scheduled the deletion of {email}; it takes effect in 14 days, "
                 "and you can cancel it until then by signing in."),
                ("[Yes please.|Yes, as a PDF if possible.]",
                 "I've emailed your order history to {email} as a PDF. The account is scheduled "
                 "for deletion in 14 days."),
            ],
            "extras": [
                ("[Will you keep anything?|Do you keep any of my data?]",
                 "Only invoices for {email}, which we must keep for tax reasons; everything else "
                 "is erased."),
            ],
        },
    ],
    "refund": [
        {
            "ref": "order {order}",
            "u1": "I sent back the {product} from order #{order} {time}, but the refund [hasn't "
                  "arrived|still isn't showing].",
            "a1": "Topic: refund. [Sorry for the wait|Let me check]. Do you have the return "
                  "tracking number?",
            "replies": [
                ("[Yes, it's {tracking}.|{tracking}.|Here it is: {tracking}.]",
                 "Thanks. The return for order {order} reached our warehouse, and I've released "
                 "the refund of {amount}; it should be on your card within {n_work} working "
                 "days."),
            ],
            "extras": [
                ("[Will I get an email?|Do I get a confirmation?]",
                 "Yes, a refund confirmation for order {order} is on its way to you."),
                ("[Why did it take so long?|What held it up?]",
                 "The return for order {order} was scanned at the wrong depot, which delayed it. "
                 "Sorry about that."),
            ],
        },
        {
            "ref": "order {order}",
            "u1": "The {product} from order #{order} arrived [broken|cracked|damaged] and I'd "
                  "like [my money back|a refund], not a replacement.",
            "a1": "Topic: refund. [I'm sorry it arrived like that|Sorry about that]. Could you "
                  "send a photo of the damage?",
            "replies": [
                ("[Sure, I've attached one.|Photo attached.|Here it is.]",
                 "Thanks, that's clear. I've refunded {amount} for order {order} to your "
                 "original payment method. There's no need to send the {product} back."),
            ],
            "extras": [
                ("[What should I do with it?|How do I get rid of it?]",
                 "Please recycle it locally; you don't need to return anything from order "
                 "{order}."),
                ("[How long will the money take?|When will I see the refund?]",
                 "The {amount} for order {order} should show within {n_work} working days."),
            ],
        },
        {
            "ref": "order {order}",
            "u1": "I cancelled order #{order} [within an hour|the same day|{time}]. When do I get "
                  "my {amount} back?",
            "a1": "Topic: refund. [Let me check that for you|Thanks for your patience]. Did you "
                  "pay by card or by PayPal?",
            "replies": [
                ("[By card.|Card.|With my debit card.]",
                 "The {amount} for order {order} was refunded today. Card refunds take three to "
                 "five working days to appear."),
                ("[PayPal.|By PayPal.]",
                 "The {amount} for order {order} was refunded to PayPal today; it usually "
                 "appears within a day."),
            ],
            "extras": [
                ("[Will the cancellation show anywhere?|Can I see that it's cancelled?]",
                 "Yes, order {order} now shows as cancelled and refunded under Orders."),
            ],
        },
        {
            "ref": "order {order}",
            "u1": "I bought a {product} for {amount} (order #{order}) and it's now on sale for "
                  "{amount2}. Can I get the difference back?",
            "a1": "Topic: refund. [Good news|Yes, we can help]: we refund price drops within 14 "
                  "days. When did you place the order?",
            "replies": [
                ("[{time_order}.|I ordered it {time_order}.]",
                 "Thanks. Order {order} is within 14 days, so I've refunded the difference "
                 "between {amount} and {amount2} to your original payment method."),
            ],
            "extras": [
                ("[Does that work for other orders too?|Can I do this again next time?]",
                 "Yes, any order within 14 days qualifies, just like order {order}."),
            ],
        },
    ],
}

# the last pair of a conversation with 4 user turns
SC_CLOSING = (
    "[Thanks, that's all.|Great, thank you.|Perfect, thanks for your help.|That's everything, "
     "thanks.|Brilliant, cheers.]",
     "You're welcome. [I've closed ticket {ticket}.|Ticket {ticket} is now closed.] [If anything "
     "else comes up about {ref}, just reply here.|Have a good day.]",
)


def _sc_slots(rng: random.Random) -> dict[str, str]:
    slots = _tr_slots(rng)
    slots["order"] = str(rng.randint(100000, 9999999))
    slots["code"] = f"E-{rng.randint(1000, 9999)}"
    slots["serial"] = f"SN-{rng.randint(10**6, 10**7 - 1)}"
    slots["n_work"] = rng.choice(["three", "four", "five", "seven", "ten"])
    slots["time_order"] = rng.choice(["Yesterday", "Last week", "On Monday", "A few days ago",
                                      "Earlier this week", "At the weekend", "Last Friday"])
    slots["time_future"] = rng.choice(["tomorrow", f"on {slots['weekday']}", "this weekend",
                                       "next week", "within two working days"])
    while slots["email2"] == slots["email"]:
        slots["email2"] = f"{slots['name'].lower()}{rng.randint(100, 999)}@example.com"
    return slots


def _sc_conversation(rng: random.Random, topic: str) -> list[dict]:
    scenario = rng.choice(SC_SCENARIOS[topic])
    slots = _sc_slots(rng)
    turns = [(scenario["u1"], scenario["a1"]), rng.choice(scenario["replies"])]
    n_users = rng.choice(SC_TURNS)
    extras = rng.sample(scenario["extras"], 1) if n_users >= 3 else []
    turns += extras
    if n_users == 4:
        slots["ref"] = scenario["ref"].format(**slots)
        turns.append(SC_CLOSING)
    messages = []
    if rng.random() < SC_SYSTEM_SHARE:
        messages.append({"content": rng.choice(SC_SYSTEM), "role": "system"})
    for user, assistant in turns:
        messages.append({"content": _tr_expand(rng, user, slots), "role": "user"})
        messages.append({"content": _tr_expand(rng, assistant, slots), "role": "assistant"})
    return messages


def sc_user_text(messages: list[dict]) -> str:
    """The concatenated user turns of a conversation (what the near-duplicate rule compares)."""
    return " ".join(m["content"] for m in messages if m["role"] == "user")


def sc_refs(text: str) -> set[str]:
    """Reference-like tokens in a text: e-mail addresses and words of 4+ characters with a
    digit (order and invoice numbers, amounts, error codes, serial numbers, usernames)."""
    tokens = (t.rstrip(".-") for t in re.findall(r"[\w.+@-]+", text))
    return {t for t in tokens if len(t) >= 4 and ("@" in t or any(c.isdigit() for c in t))}


def sc_carried_refs(messages: list[dict]) -> set[str]:
    """References from the first user turn that a later assistant turn repeats while no later
    user turn does (so the reply needs the conversation's history)."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    later_users = set().union(*(sc_refs(u) for u in users[1:]))
    later_replies = set().union(*(sc_refs(a) for a in assistants[1:]))
    return (sc_refs(users[0]) & later_replies) - later_users


def build_support_chats(rng: random.Random, avoid: list[str]) -> list[dict]:
    """Topics take turns; a conversation is drawn again when its concatenated user turns are an
    exact or near duplicate of a kept conversation's, or when one of its user turns is an exact
    or near duplicate of a text in ``avoid`` (the ticket_routing messages)."""
    others = NearDuplicateGuard()
    for text in avoid:
        others.add(text)
    guard = NearDuplicateGuard()
    rows = []
    for _ in range(SC_PER_TOPIC):
        for topic in TICKET_LABELS:
            for _ in range(1000):
                messages = _sc_conversation(rng, topic)
                users = [m["content"] for m in messages if m["role"] == "user"]
                if not sc_carried_refs(messages):
                    raise RuntimeError(f"no reference carried over: {messages}")
                if any(others.clashes(u) for u in users):
                    continue
                if guard.admit(sc_user_text(messages)):
                    break
            else:
                raise RuntimeError(f"cannot make enough distinct {topic} conversations")
            rows.append({"messages": messages})
    rng.shuffle(rows)
    return rows


SC_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


def to_sharegpt(rows: list[dict]) -> list[dict]:
    """The same conversations in ShareGPT form: conversations = [{from, value}]."""
    return [{"conversations": [{"from": SC_SHAREGPT_ROLE[m["role"]], "value": m["content"]}
                               for m in row["messages"]]} for row in rows]


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def build_all(out: Path) -> dict[str, Path]:
    """Write every generated file under ``out``; returns {relative path: absolute path}."""
    written: dict[str, Path] = {}
    builders = [
        ("ticket_routing", 1, build_ticket_routing),
        ("order_extraction", 2, build_order_extraction),
        ("capitals", 3, build_capitals),
        ("everyday_mc", 4, build_everyday_mc),
        ("word_opposites", 5, build_word_opposites),
        ("general_instructions", 6, build_general_instructions),
    ]
    built: dict[str, list[dict]] = {}
    for name, offset, fn in builders:
        rows = fn(random.Random(SEED + offset))
        unique_rows(rows, INPUT_FIELD[name])
        if name in NO_NEAR_DUPLICATES:
            check_no_near_duplicates([row[INPUT_FIELD[name]] for row in rows])
        rel = f"{name}/{name}.jsonl"
        write_jsonl(out / rel, rows)
        written[rel] = out / rel
        built[name] = rows
    train, held = build_harbor_handbook(random.Random(SEED + 7))
    for rel, text in [("harbor_handbook/harbor_handbook.txt", train),
                      ("harbor_handbook/harbor_handbook_heldout.txt", held)]:
        write_text(out / rel, text)
        written[rel] = out / rel

    # Built after the others because they must not duplicate texts of earlier datasets.
    name = "concise_preference"
    avoid = [r["question"] for n in ("capitals", "word_opposites", "everyday_mc")
             for r in built[n]] + [r["instruction"] for r in built["general_instructions"]]
    rows = build_concise_preference(random.Random(SEED + 8), avoid)
    unique_rows(rows, INPUT_FIELD[name])
    check_no_near_duplicates([row["prompt"] for row in rows])
    rel = f"{name}/{name}.jsonl"
    write_jsonl(out / rel, rows)
    written[rel] = out / rel

    chats = build_support_chats(random.Random(SEED + 9),
                                [r["message"] for r in built["ticket_routing"]])
    check_no_near_duplicates([sc_user_text(row["messages"]) for row in chats])
    for rel, rows in [("support_chats/support_chats.jsonl", chats),
                      ("support_chats/support_chats_sharegpt.jsonl", to_sharegpt(chats))]:
        write_jsonl(out / rel, rows)
        written[rel] = out / rel
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the datasets/ folder of this script)")
    args = parser.parse_args(argv)
    written = build_all(args.out)
    for rel, path in written.items():
        print(f"{rel}\t{path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
