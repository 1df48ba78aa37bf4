"""Operator commands: ``python -m web_service.manage ensure-user --username U --role R --password-env VAR``
and ``python -m web_service.manage set-skills --username U --categories boiler,fridge --languages de,en``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from crm_store.db import session_scope
from crm_store.enums import ApplianceCategory, UserRole
from crm_store.repositories.handoffs import set_skills
from crm_store.repositories.users import create_user, get_user_by_username

logger = logging.getLogger(__name__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure-user", help="create a user unless it exists")
    ensure.add_argument("--username", required=True)
    ensure.add_argument("--role", choices=[r.value for r in UserRole], required=True)
    ensure.add_argument("--full-name", default="")
    # The password is read from the environment so that it never shows in the process list.
    ensure.add_argument("--password-env", required=True)
    ensure.add_argument("--url", default=os.environ.get("DATABASE_URL", "sqlite:///var/crm.db"))
    skills = sub.add_parser("set-skills", help="routing skills of a console user (empty: takes anything)")
    skills.add_argument("--username", required=True)
    skills.add_argument("--categories", default="", help=f"comma-separated: {','.join(c.value for c in ApplianceCategory)}")
    skills.add_argument("--languages", default="", help="comma-separated language codes, e.g. de,en")
    skills.add_argument("--url", default=os.environ.get("DATABASE_URL", "sqlite:///var/crm.db"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "set-skills":
        return set_user_skills(args)
    password = os.environ.get(args.password_env, "")
    if len(password) < 12:
        print(f"error: ${args.password_env} must hold a password of at least 12 characters", file=sys.stderr)
        return 2
    with session_scope(args.url) as session:
        if get_user_by_username(session, username=args.username) is not None:
            return 0
        create_user(session, username=args.username, password=password, role=UserRole(args.role),
                    full_name=args.full_name)
    logger.info("created %s user %r", args.role, args.username)
    return 0


def set_user_skills(args: argparse.Namespace) -> int:
    try:
        categories = [ApplianceCategory(c.strip()) for c in args.categories.split(",") if c.strip()]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with session_scope(args.url) as session:
        user = get_user_by_username(session, username=args.username)
        if user is None:
            print(f"error: no user {args.username!r}", file=sys.stderr)
            return 2
        result = set_skills(session, user_id=user.id, categories=categories, languages=args.languages.split(","))
    logger.info("skills of %r: %s", args.username, ", ".join(result.as_list()) or "any")
    return 0


if __name__ == "__main__":
    sys.exit(main())
