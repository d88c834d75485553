"""The pure domain core of the wallet ledger: standard library only, no clock, no randomness, no I/O.

Where things live:
    money.py        currencies, their exponents, the Avro long bound of an amount
    limits.py       `Limits`: per-command maximum, open holds maximum, balance maximum
    commands.py     what producers ask for (`Deposit`, `Transfer`, ...) and the legs' command ids
    events.py       what happened (`Deposited`, `CommandRejected`, ...)
    rejections.py   rejection codes
    state.py        `WalletState`, `Hold`, `GENESIS_HASH`
    hashing.py      canonical event bytes and the hash chain
    ledger.py       `decide`, `evolve`, `replay`, `verify_chain`
    frozen.py       `builder`: a frozen value built without its dataclass `__init__` (the hot paths)
    invariants.py   `check_wallet`, `check_transition`
    errors.py       the fault hierarchy (`DomainError` and its subclasses)
"""
