#!/usr/bin/env python3
"""Build ftpipe's own small datasets, deterministically.

    python datasets/build_datasets.py            # rewrites the files next to this script
    python datasets/build_datasets.py --out DIR  # writes the same files under DIR

Standard library only. Every dataset draws from its own ``random.Random(SEED + offset)``, so
running the script again rewrites every file byte for byte (the test suite checks this).
All word lists, templates and facts below were written for ftpipe (CC0-1.0); no third-party
data is read or copied. The CARD.md files and README.md are hand-written and not generated.

Outputs (relative to the output folder):
    ticket_routing/ticket_routing.jsonl           target task, classification
    order_extraction/order_extraction.jsonl       target task, structured extraction
    capitals/capitals.jsonl                       held-out probe, free generation
    everyday_mc/everyday_mc.jsonl                 held-out probe, multiple choice
    word_opposites/word_opposites.jsonl           held-out probe, free generation
    general_instructions/general_instructions.jsonl   replay data
    harbor_handbook/harbor_handbook.txt           domain-adaptation raw text
    harbor_handbook/harbor_handbook_heldout.txt   held-out paragraphs for perplexity
"""

from __future__ import annotations

import argparse
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
}

# The field that is the model's input, per JSONL dataset (must be unique within a dataset).
INPUT_FIELD = {
    "ticket_routing": "message",
    "order_extraction": "text",
    "capitals": "question",
    "everyday_mc": "question",
    "word_opposites": "question",
    "general_instructions": "instruction",
}


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

TR_PRODUCTS = [
    "wireless headphones", "coffee grinder", "standing desk", "air fryer", "yoga mat",
    "hiking backpack", "desk lamp", "electric kettle", "running shoes", "winter jacket",
    "blender", "office chair", "camera bag", "rice cooker", "duvet set", "travel mug",
    "garden hose", "toaster", "bike helmet", "wall clock",
]
TR_DEVICES = [
    "smart watch", "robot vacuum", "router", "tablet", "bluetooth speaker", "printer",
    "e-reader", "fitness tracker", "smart thermostat", "security camera", "laptop",
    "doorbell camera",
]
TR_TIMES = [
    "yesterday", "last week", "three days ago", "on Monday", "this morning", "two weeks ago",
    "last Friday", "over the weekend", "on Tuesday", "ten days ago", "last night",
    "at the start of the month",
]
TR_PLANS = ["Basic", "Plus", "Premium", "Family", "Team", "Pro", "Starter"]
TR_PLACES = [
    "my office", "my parents' house", "my new flat", "a pickup point near me",
    "my neighbour's address", "my work address", "the address on my account",
]
TR_COUNTRIES = [
    "Norway", "Canada", "Portugal", "Japan", "Ireland", "Mexico", "Poland", "Australia",
    "Chile", "Greece",
]
TR_APPS = ["the mobile app", "the desktop app", "the web dashboard", "the app on my tablet"]

TR_CORES = {
    "billing": [
        "I was charged {amount} twice for my {plan} subscription this month.",
        "My latest invoice shows {amount}, but my plan is supposed to cost {amount2}.",
        "There is a charge of {amount} on my card from {time} that I don't recognise.",
        "My card keeps getting declined when the monthly payment is taken.",
        "How do I change the credit card you bill every month?",
        "Could you add our company VAT number to the invoice for order {order}?",
        "The price of my {plan} plan went up to {amount} without any notice.",
        "I need a copy of the invoice for the payment I made {time}.",
        "Why am I being billed for the {plan} plan when I signed up for {plan2}?",
        "I'd like to switch from monthly to yearly billing on my {plan} plan.",
        "The payment for order {order} was taken from the wrong bank account.",
        "My receipt lists {amount} in tax, which looks far too high.",
        "I was billed {time} even though my free trial should still be running.",
        "Can the invoice be addressed to my employer instead of to me?",
        "Your direct debit was collected twice {time}, once for {amount} and once for {amount2}.",
        "Is there a way to pay by bank transfer instead of by card?",
        "The amount on my statement doesn't match the price shown at checkout.",
    ],
    "shipping": [
        "My {product} still hasn't arrived and it was due {time}.",
        "The tracking for order {order} hasn't updated since {time}.",
        "The courier says order {order} was delivered, but nothing came to my door.",
        "Can I change the delivery address for order {order} to {place}?",
        "Is express delivery available for the {product} I just ordered?",
        "My parcel was left with a neighbour I have never met.",
        "The delivery date for my {product} keeps getting pushed back.",
        "The box with my {product} arrived completely crushed, though the item looks okay.",
        "Which courier are you using for order {order}?",
        "Do you deliver to {country}, and how long does it usually take?",
        "Only one box of order {order} arrived and the second one is missing.",
        "Could the driver bring my {product} in the afternoon instead of the morning?",
        "My {product} seems to be stuck at customs.",
        "The delivery note says my parcel went to the wrong town.",
        "I won't be home {time_future}, can the parcel be held at the depot?",
        "The tracking link for my {product} just shows an error page from the courier.",
        "Why was my {product} sent by standard post when I chose next-day delivery?",
    ],
    "technical": [
        "{app_cap} crashes every time I open the settings page.",
        "My {device} won't connect to Wi-Fi since the latest update.",
        "I keep getting error code {code} when I try to upload a file.",
        "The website shows a blank page after I press the checkout button.",
        "My {device} won't switch on even though it's fully charged.",
        "The firmware update for my {device} has been stuck at {pct} percent for an hour.",
        "Bluetooth pairing with my {device} fails every single time.",
        "Notifications from {app} stopped working {time}.",
        "Data no longer syncs between {app} and my phone.",
        "Videos in {app} freeze after a few seconds of playback.",
        "The screen on my {device} flickers whenever I change the brightness.",
        "Exporting a report to PDF produces an empty file.",
        "My {device} keeps restarting on its own every few minutes.",
        "The search bar in {app} returns no results, even for things I know exist.",
        "Since {time} my {device} drains its battery in about two hours.",
        "{app_cap} shows error {code} and then closes.",
        "The voice commands on my {device} stopped responding {time}.",
    ],
    "account": [
        "I forgot my password and the reset email never arrives.",
        "How do I change the email address on my account?",
        "My account was locked after too many sign-in attempts.",
        "Please delete my account and all the personal data you hold about me.",
        "I want to change the username shown on my profile.",
        "I somehow have two accounts and would like to merge them into one.",
        "I lost my phone and can't get the two-factor code to sign in.",
        "Someone changed my account password without my permission.",
        "Can I add my partner as a second user on my account?",
        "How do I stop the newsletter emails linked to my profile?",
        "I'd like to update the phone number registered to my account.",
        "My profile still shows my old surname even though I changed it {time}.",
        "Is it possible to transfer my account to a colleague who is taking over my role?",
        "I never received the link to verify my new account.",
        "How can I download a copy of the personal data stored in my account?",
        "My security questions were reset and I can no longer answer them.",
        "I want to close my old account but keep my order history.",
    ],
    "refund": [
        "I returned the {product} {time} and still haven't got my money back.",
        "I'd like my money back for the {product} because it stopped working after a week.",
        "Please cancel order {order} and return the full {amount} to me.",
        "The {product} doesn't suit me, so I want to send it back for a full refund.",
        "You approved my return {time}, but the {amount} hasn't reached my account yet.",
        "I cancelled order {order} within the 14-day window and expect to be reimbursed.",
        "The {product} arrived broken and I want my money back rather than a replacement.",
        "Can I get a partial refund since my {product} came without its charger?",
        "What is the status of the refund for order {order}?",
        "I was promised {amount} back for the {product} I sent back {time}.",
        "I no longer need the {product}; how do I return it and get reimbursed?",
        "You gave me store credit, but I asked for the money to go back to my card.",
        "Only {amount2} of the {amount} I paid for the returned {product} has come back.",
        "The return label is printed and the {product} is packed, when will I be reimbursed?",
        "I'd like to return the unopened {product} and have the payment reversed.",
        "The {product} was a duplicate order, so please take it back and pay me back.",
        "My refund for the {product} was sent to an old card that is now closed.",
    ],
}

TR_CONTEXT = {
    "billing": [
        "I've attached a screenshot of my bank statement.",
        "This is the second month in a row that it has happened.",
        "Our finance team needs a corrected invoice by Friday.",
        "I only have the one subscription with you.",
        "The charge appeared under a name I didn't recognise at first.",
        "Please confirm which amount will be charged next month.",
    ],
    "shipping": [
        "The tracking page just says it is in transit.",
        "I need it before the weekend because it's a gift.",
        "Nobody rang the bell, and there was no card through the door.",
        "I checked with the neighbours and nobody has it.",
        "The estimated delivery has changed three times already.",
        "I'm happy to collect it myself if that is quicker.",
    ],
    "technical": [
        "I've already tried restarting it twice.",
        "I'm using the latest version on an Android phone.",
        "It worked perfectly until the update.",
        "Reinstalling didn't make any difference.",
        "The same thing happens on my laptop and my phone.",
        "I cleared the cache as your help page suggested, with no luck.",
    ],
    "account": [
        "I still have access to my old email address.",
        "I can confirm my identity with the last four digits of my card.",
        "I've checked my spam folder as well.",
        "I'd rather not create a brand-new profile.",
        "The help page only tells me to sign in first, which I can't do.",
        "I'm the only person who should have access.",
    ],
    "refund": [
        "The item is still in its original packaging.",
        "I have the return receipt from the post office.",
        "It has now been more than ten working days.",
        "I paid with a debit card, if that matters.",
        "I don't want a voucher or an exchange.",
        "The courier confirmed that you received the return.",
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
    "This is quite urgent for me.",
    "I contacted you {time} but haven't heard back.",
    "My customer number is {custno}.",
    "I'd prefer an answer by email.",
]

TR_GREETINGS = [
    "Hi.", "Hello.", "Hi there.", "Good morning.", "Good afternoon.", "Hello team.",
    "Dear support,", "Hey.",
]

TR_CLOSINGS = [
    "Thanks.", "Thank you.", "Thanks in advance.", "Please help.", "Could you look into this?",
    "I'd appreciate a quick reply.", "Please let me know what to do.", "Many thanks.",
    "What are my options?", "Kind regards.",
]


def _tr_amount(rng: random.Random) -> str:
    cur = rng.choice(["$", "€", "£"])
    return f"{cur}{rng.randint(5, 240)}.{rng.choice(['00', '99', '49', '50', '95'])}"


def _tr_message(rng: random.Random, label: str) -> str:
    amount = _tr_amount(rng)
    amount2 = _tr_amount(rng)
    while amount2 == amount:
        amount2 = _tr_amount(rng)
    plan, plan2 = rng.sample(TR_PLANS, 2)
    app = rng.choice(TR_APPS)
    slots = {
        "amount": amount, "amount2": amount2, "plan": plan, "plan2": plan2,
        "product": rng.choice(TR_PRODUCTS), "device": rng.choice(TR_DEVICES),
        "time": rng.choice(TR_TIMES), "order": str(rng.randint(10000, 99999)),
        "place": rng.choice(TR_PLACES), "country": rng.choice(TR_COUNTRIES),
        "code": str(rng.choice([101, 203, 404, 500, 502, 612, 740, 903, 1001, 1207])),
        "pct": str(rng.choice([12, 37, 45, 60, 73, 88, 99])), "app": app, "app_cap": cap_first(app),
        "years": number_words(rng.randint(2, 9)), "custno": f"C-{rng.randint(100000, 999999)}",
        "time_future": rng.choice(["tomorrow", "on Thursday", "this weekend", "next week"]),
    }
    parts = []
    if rng.random() < 0.35:
        parts.append(rng.choice(TR_GREETINGS))
    parts.append(rng.choice(TR_CORES[label]).format(**slots))
    r = rng.random()
    extra = None
    if r < 0.30:
        extra = rng.choice(TR_CONTEXT[label])
    elif r < 0.55:
        extra = rng.choice(TR_INCIDENTAL[label])
    elif r < 0.70:
        extra = rng.choice(TR_GENERIC).format(**slots)
    if extra and len(parts) < 3:
        parts.append(extra)
    if len(parts) < 3 and rng.random() < 0.5:
        parts.append(rng.choice(TR_CLOSINGS))
    return " ".join(parts)


def build_ticket_routing(rng: random.Random, per_label: int = 160) -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()
    for label in TICKET_LABELS:
        got = 0
        tries = 0
        while got < per_label:
            tries += 1
            if tries > 200_000:
                raise RuntimeError(f"cannot make enough {label} messages")
            msg = _tr_message(rng, label)
            if not 10 <= len(msg.split()) <= 45 or msg.lower() in seen:
                continue
            seen.add(msg.lower())
            rows.append({"label": label, "message": msg})
            got += 1
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
OE_PREFIXES = ["", "", "", "", "Hi! ", "Hello, ", "Good morning. ", "Quick request: ",
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
    rows: list[dict] = []
    seen: set[str] = set()
    while len(rows) < n:
        row = _oe_row(rng)
        if row["text"].lower() in seen:
            continue
        seen.add(row["text"].lower())
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
