"""Writes pii.jsonl: the labelled PII corpus the guard's redactor is measured on (BENCHMARKS.md,
"PII recall and precision"), beside Presidio's pattern recognizers. Seeded, so the file is
reproducible.

Each line is one sentence: {"kind": "positive", "type": ..., "text": ..., "value": ...} with the
entity's exact text, or {"kind": "benign", "family": ..., "text": ...} for a lookalike that must
come through unaltered (order numbers, ISBNs, UUIDs, dates without context, prices, versions,
ZIP+4, street numbers, tracking numbers, Luhn-invalid card-like numbers, timestamps).

usage: python3 make_pii.py > pii.jsonl
"""

import json
import random

rng = random.Random(20261207)


def digits(n):
    return "".join(rng.choice("0123456789") for _ in range(n))


def nxx():
    while True:
        v = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
        if v[1:] != "11":
            return v


def area():
    while True:
        v = nxx()
        if v[1] != "9":
            return v


def phone():
    a, x, s = area(), nxx(), digits(4)
    forms = [
        f"({a}) {x}-{s}", f"{a}-{x}-{s}", f"{a}.{x}.{s}", f"{a} {x} {s}", f"{a}{x}{s}",
        f"+1 {a} {x} {s}", f"+1{a}{x}{s}", f"1-{a}-{x}-{s}", f"001 {a} {x} {s}",
        f"+1 ({a}) {x}-{s}", f"1 ({a}) {x}-{s}", f"({a}){x}-{s}",
        f"{a}-{x}-{s} x{rng.randint(1, 9999)}", f"{a}.{x}.{s} ext. {rng.randint(1, 999)}",
        f"({a}) {x}-{s} ext {rng.randint(10, 9999)}", f"{a}{x}{s} X{rng.randint(1, 99)}",
        f"+1-{a}-{x}-{s}", f"({a})-{x}-{s}", f"{a}/{x}-{s}", f"{a} {x}-{s}", f"+1.{a}.{x}.{s}",
    ]
    intl = [
        f"+44 20 {digits(4)} {digits(4)}", f"+44{rng.randint(1000000000, 7999999999)}",
        f"+49 30 {digits(7)}", f"+33 1 {digits(2)} {digits(2)} {digits(2)} {digits(2)}",
        f"+34 91 {digits(3)} {digits(2)} {digits(2)}", f"+61 2 {digits(4)} {digits(4)}",
        f"+91 {rng.randint(70000, 99999)} {digits(5)}", f"+52 55 {digits(4)} {digits(4)}",
    ]
    return rng.choice(forms if rng.random() < 0.8 else intl)


def luhn_complete(prefix, length):
    body = prefix + digits(length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def card():
    brand = rng.choice(["visa", "mc", "mc2", "amex", "discover", "jcb", "visa13"])
    if brand == "visa":
        n = luhn_complete("4", 16)
    elif brand == "visa13":
        n = luhn_complete("4", 13)
    elif brand == "mc":
        n = luhn_complete(str(rng.randint(51, 55)), 16)
    elif brand == "mc2":
        n = luhn_complete(str(rng.randint(2221, 2720)), 16)
    elif brand == "amex":
        n = luhn_complete(rng.choice(["34", "37"]), 15)
    elif brand == "discover":
        n = luhn_complete("6011", 16)
    else:
        n = luhn_complete(str(rng.randint(3528, 3589)), 16)
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return n
    sep = " " if style == "space" else "-"
    if len(n) == 15:
        return sep.join([n[:4], n[4:10], n[10:]])
    return sep.join(n[i:i + 4] for i in range(0, len(n), 4))


def ssn():
    while True:
        a = rng.randint(1, 899)
        if a != 666:
            break
    sep = rng.choice(["-", "-", "-", " "])
    return f"{a:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


FIRST = ["jane", "john", "maria", "li", "ahmed", "olga", "raj", "chen", "lucy", "tom"]
LAST = ["doe", "smith", "garcia", "wang", "khan", "novak", "patel", "lee", "brown", "nguyen"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "example.net", "sub.dept.example.io"]


def email():
    f, l = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{f}.{l}", f"{f}{l}", f"{f}_{l}{rng.randint(1, 99)}", f"{f}+{rng.choice(['cx', 'orders', 'x1'])}", f"{f[0]}.{l}"])
    if rng.random() < 0.2:
        local = local.capitalize()
    value = f"{local}@{rng.choice(DOMAINS)}"
    return value.upper() if rng.random() < 0.1 else value


def iban():
    country, length = rng.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24)])
    if country == "GB":
        bban = "WEST" + digits(14)
    elif country == "NL":
        bban = "ABNA" + digits(10)
    else:
        bban = digits(length - 4)
    rearranged = bban + country + "00"
    num = int("".join(str(int(c, 36)) for c in rearranged))
    check = 98 - num % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def passport():
    return rng.choice([digits(9), rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") + digits(8)])


def license_no():
    return rng.choice([
        rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") + digits(7),
        digits(8), f"{digits(3)}-{digits(3)}-{digits(3)}",
        rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") + digits(3) + "-" + digits(4) + "-" + digits(4),
        digits(9), rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") + digits(12),
    ])


def birth():
    y, m, d = rng.randint(1935, 2008), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([f"{m:02d}/{d:02d}/{y}", f"{m}/{d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{m:02d}-{d:02d}-{y}"])


def ipv4():
    return ".".join(str(rng.randint(0, 255)) for _ in range(4))


POSITIVE = {
    "phone": (phone, ["Please call me back at {v} today.", "My number is {v}.", "Reach the customer on {v}, she prefers mornings.",
                      "Tel: {v}", "You can text {v} if the line is busy.", "Updated contact: {v} (mobile)."]),
    "card": (card, ["My card number is {v}, expiring next year.", "Charge {v} for the upgrade.", "The customer read out {v} over the phone.",
                    "Card: {v}", "Please refund to {v} instead."]),
    "ssn": (ssn, ["My SSN is {v}.", "Social security number {v} on file.", "Verify the customer with {v} please.", "SSN: {v}"]),
    "email": (email, ["Send the invoice to {v} please.", "Contact: {v}", "My email changed to {v} last week.", "Reply to {v}, thanks."]),
    "iban": (iban, ["Please wire the refund to {v}.", "IBAN: {v}", "My account is {v} at the local branch."]),
    "passport": (passport, ["My passport number is {v}.", "Passport no. {v}, issued 2019.", "passport: {v}", "The passport on file reads {v}."]),
    "driver_license": (license_no, ["My driver's license number is {v}.", "Driver license {v}, California.", "DL# {v}", "Licence number {v} please verify."]),
    "birth_date": (birth, ["I was born on {v}.", "DOB: {v}", "Date of birth {v} for the account holder.", "My birthday is {v}."]),
    "ipv4": (ipv4, ["My router's address is {v}.", "The device at {v} keeps dropping.", "Server {v} is unreachable."]),
}

COUNTS = {"phone": 260, "card": 200, "ssn": 110, "email": 140, "iban": 70, "passport": 70,
          "driver_license": 70, "birth_date": 90, "ipv4": 40}


def isbn13():
    body = "978" + digits(9)
    total = sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body))
    c = (10 - total % 10) % 10
    return f"{body[:3]}-{body[3]}-{body[4:7]}-{body[7:12]}-{c}"


def uuid():
    h = lambda n: "".join(rng.choice("0123456789abcdef") for _ in range(n))  # noqa: E731
    return f"{h(8)}-{h(4)}-4{h(3)}-{rng.choice('89ab')}{h(3)}-{h(12)}"


def luhn_invalid():
    n = luhn_complete("4", 16)
    bad = n[:-1] + str((int(n[-1]) + rng.randint(1, 9)) % 10)
    return " ".join(bad[i:i + 4] for i in range(0, 16, 4))


BENIGN = {
    "order_number": lambda: rng.choice([f"Order #{digits(10)} has shipped.", f"My order {digits(9)} arrived damaged.",
                                        f"Order number 1{digits(9)} is missing an item.", f"Ticket {digits(8)} is still open."]),
    "isbn": lambda: rng.choice([f"The book ISBN {isbn13()} is out of stock.", f"ISBN-10 0{digits(8)}X listed twice."]),
    "uuid": lambda: f"Request id {uuid()} failed.",
    "date_no_context": lambda: rng.choice([f"Delivery on {rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2025 between 9 and 5.",
                                           f"Invoice date {rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}.",
                                           f"The meeting moved to {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2026."]),
    "price": lambda: rng.choice([f"The total was ${rng.randint(1, 9)},{digits(3)}.{digits(2)}.", f"That costs {rng.randint(10, 999)}.{digits(2)} EUR.",
                                 f"Refund of ${rng.randint(100, 99999)} approved."]),
    "version": lambda: rng.choice([f"Update to version {rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 99)} please.",
                                   f"App v{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)} crashes on start."]),
    "zip4": lambda: f"Ship to ZIP {digits(5)}-{digits(4)}.",
    "street_number": lambda: rng.choice([f"I live at {rng.randint(1, 9999)} Oak Street, Apt {rng.randint(1, 99)}.",
                                         f"Deliver to {rng.randint(100, 99999)} Main Rd."]),
    "tracking": lambda: rng.choice([f"Tracking 1Z{digits(3)}AA{digits(10)} shows delivered.", f"USPS tracking 9400{digits(18)}."]),
    "card_like": lambda: rng.choice([f"Reference {luhn_invalid()} on the statement.", f"Gift code {digits(4)} {digits(4)} {digits(4)} {digits(3)}."]),
    "timestamp": lambda: rng.choice([f"Event at unix time 17{digits(8)}.", f"Log line 1{digits(12)} ms."]),
    "quantity": lambda: rng.choice([f"I need {rng.randint(2, 50)} x {rng.randint(100, 999)} ml bottles.", f"Room {rng.randint(100, 999)}, floor {rng.randint(1, 40)}."]),
    "time_and_ratio": lambda: rng.choice([f"Call me at {rng.randint(1, 12)}:{rng.randint(10, 59)} pm.", f"The ratio was {rng.randint(1, 9)}/{rng.randint(1, 9)}.",
                                          f"Score {rng.randint(0, 100)}-{rng.randint(0, 100)} last night."]),
    "case_and_model": lambda: rng.choice([f"Case {digits(8)} was escalated.", f"Model SM-G{digits(3)}B needs a screen.", f"Invoice INV-{rng.randint(2019, 2026)}-{digits(6)}."]),
}


def main():
    rows = []
    for t, n in COUNTS.items():
        make, templates = POSITIVE[t]
        for _ in range(n):
            v = make()
            rows.append({"kind": "positive", "type": t, "text": rng.choice(templates).format(v=v), "value": v})
    per = -(-1040 // len(BENIGN))
    for family, make in BENIGN.items():
        for _ in range(per):
            rows.append({"kind": "benign", "family": family, "text": make()})
    for r in rows:
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
