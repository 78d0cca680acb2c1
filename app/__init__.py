"""The interactive editing app: the three agents, the editor and eval's judge in a local web page.

It stands above eval (it scores edits with eval's judge), so it is a package of its own and not part
of inference, the ground floor. `python -m app` starts it (`app/editing_app.py`).
"""
