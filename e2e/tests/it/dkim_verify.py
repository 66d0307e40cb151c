"""Independent DKIM verifier for the sender's signing tests (dkimpy, not the signing library).

Usage: dkim_verify.py MESSAGE_FILE NAME=TXT...
Each NAME=TXT is a DNS record given directly (`sel._domainkey.example.com=v=DKIM1; k=rsa; p=...`),
so no DNS is queried. Verifies every DKIM-Signature of the message and prints one line per
signature: `<index> <a=> <d=> <s=> pass|fail`. Exits 0 only when there is at least one
signature and every one verifies.
"""

import sys

import dkim


def main() -> int:
    message = open(sys.argv[1], "rb").read()
    records = {}
    for arg in sys.argv[2:]:
        name, txt = arg.split("=", 1)
        records[name.rstrip(".").lower()] = txt.encode()

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return records.get(name.rstrip(".").lower())

    d = dkim.DKIM(message)
    sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    ok = bool(sigs)
    for i, sig in enumerate(sigs):
        tags = dkim.util.parse_tag_value(b"".join(sig.split()))
        good = d.verify(idx=i, dnsfunc=dnsfunc)
        ok = ok and good
        print(
            i,
            tags.get(b"a", b"?").decode(),
            tags.get(b"d", b"?").decode(),
            tags.get(b"s", b"?").decode(),
            "pass" if good else "fail",
            tags.get(b"h", b"").decode(),
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
