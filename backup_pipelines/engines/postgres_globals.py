"""What a PostgreSQL database needs from its cluster to be restored onto an empty server: the roles it
references and its own properties, as one psql script stored beside the dump (companion "globals.sql").

pg_dump keeps neither: roles live in the cluster, and without `--create` a dump holds no CREATE DATABASE,
COMMENT ON DATABASE, ALTER DATABASE ... SET or database grants. The script is run twice with psql, around
pg_restore, with the new database's name in the psql variable `target`:

    psql -X -v ON_ERROR_STOP=1 -v target=NEW -f globals.sql postgres              # roles, CREATE DATABASE
    pg_restore --exit-on-error --dbname=NEW backup.dump
    psql -X -v ON_ERROR_STOP=1 -v target=NEW -v restored=1 -f globals.sql postgres  # database properties

Roles: every role the database references (owners, grantees and grantors of every ACL, policy roles, default
privileges, per-database role settings), the roles those belong to and the roles that belong to them, except
the built-in ones. The script creates only the roles that do not exist, with their attributes, comment,
settings and memberships among themselves; a role that exists is left exactly as it is (a restore test on
the source's own server must never change a live role). Passwords are kept only when the dataset asks
(`source.role_passwords`), since reading them needs a superuser.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg
from psycopg import sql

from backup_pipelines.errors import SourceUnavailableError

LABEL = "globals.sql"
ACL_COLUMNS = (
    ("pg_class", "relacl"),
    ("pg_proc", "proacl"),
    ("pg_namespace", "nspacl"),
    ("pg_type", "typacl"),
    ("pg_largeobject_metadata", "lomacl"),
    ("pg_default_acl", "defaclacl"),
    ("pg_attribute", "attacl"),
    ("pg_foreign_data_wrapper", "fdwacl"),
    ("pg_foreign_server", "srvacl"),
)
OWNER_COLUMNS = (
    ("pg_class", "relowner"),
    ("pg_proc", "proowner"),
    ("pg_namespace", "nspowner"),
    ("pg_type", "typowner"),
    ("pg_largeobject_metadata", "lomowner"),
    ("pg_default_acl", "defaclrole"),
    ("pg_event_trigger", "evtowner"),
    ("pg_foreign_server", "srvowner"),
    ("pg_extension", "extowner"),
    ("pg_collation", "collowner"),
    ("pg_conversion", "conowner"),
    ("pg_operator", "oprowner"),
    ("pg_opclass", "opcowner"),
    ("pg_opfamily", "opfowner"),
    ("pg_ts_config", "cfgowner"),
    ("pg_ts_dict", "dictowner"),
    ("pg_publication", "pubowner"),
    ("pg_statistic_ext", "stxowner"),
)
FIRST_USER_OID = 16384  # roles below are created by initdb and exist on every server
LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"}


def _referenced_roles_sql() -> str:
    direct = ["select datdba from pg_database where datname = current_database()"]
    direct += [f"select {column} from {table}" for table, column in OWNER_COLUMNS]
    for table, column in (*ACL_COLUMNS, ("pg_database", "datacl")):
        where = " where datname = current_database()" if table == "pg_database" else ""
        direct += [
            f"select (aclexplode({column})).grantee from {table}{where}",
            f"select (aclexplode({column})).grantor from {table}{where}",
        ]
    direct += [
        "select unnest(polroles) from pg_policy",
        "select setrole from pg_db_role_setting where setdatabase = "
        "(select oid from pg_database where datname = current_database())",
    ]
    return f"""
    with recursive direct(oid) as ({" union ".join(direct)}),
    up(oid) as (select oid from direct union select m.roleid from pg_auth_members m join up on m.member = up.oid),
    down(oid) as (select oid from direct union select m.member from pg_auth_members m join down on m.roleid = down.oid)
    select r.oid from pg_roles r where r.oid >= {FIRST_USER_OID}
      and (r.oid in (select oid from up) or r.oid in (select oid from down))
    order by r.rolname"""


ROLE_SQL = """
    select r.oid, r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
           r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text,
           shobj_description(r.oid, 'pg_authid'),
           (select setconfig from pg_db_role_setting s where s.setrole = r.oid and s.setdatabase = 0)
    from pg_roles r where r.oid = any(%s) order by r.rolname"""
MEMBERSHIP_SQL = """
    select pg_get_userbyid(m.roleid), pg_get_userbyid(m.member), m.admin_option
    from pg_auth_members m where m.roleid = any(%s) and m.member = any(%s) order by 1, 2"""
DATABASE_SQL = """
    select pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
           d.datlocprovider::text, d.daticulocale, shobj_description(d.oid, 'pg_database'),
           (select setconfig from pg_db_role_setting s where s.setdatabase = d.oid and s.setrole = 0),
           d.datacl is not null
    from pg_database d where d.datname = current_database()"""
DATABASE_GRANTS_SQL = """
    select case when a.grantee = 0 then 'PUBLIC' else quote_ident(pg_get_userbyid(a.grantee)) end,
           a.privilege_type, a.is_grantable
    from pg_database d, aclexplode(d.datacl) a where d.datname = current_database() order by 1, 2"""
ROLE_DATABASE_SETTINGS_SQL = """
    select pg_get_userbyid(s.setrole), s.setconfig from pg_db_role_setting s
    where s.setdatabase = (select oid from pg_database where datname = current_database()) and s.setrole <> 0
    order by 1"""


def globals_script(connection: psycopg.Connection[Any], role_passwords: bool) -> bytes:
    """Return the psql script (see the module docstring) for the database `connection` is on, as its
    current transaction sees it. Raise SourceUnavailableError if `role_passwords` is asked of a login that
    cannot read them."""

    def text(statement: sql.Composable) -> str:
        return statement.as_string(connection)

    role_oids = [row[0] for row in connection.execute(_referenced_roles_sql()).fetchall()]
    roles = connection.execute(ROLE_SQL, (role_oids,)).fetchall()
    passwords = _passwords(connection, role_oids) if role_passwords else {}
    tag = f"$bp_{secrets.token_hex(4)}$"
    lines = [
        "-- backup-pipelines: the roles and properties of one database (see docs/restore.md). Run with psql:",
        "--   psql -X -v ON_ERROR_STOP=1 -v target=NEW -f THIS postgres              (roles, CREATE DATABASE)",
        "--   pg_restore --exit-on-error --dbname=NEW DUMP",
        "--   psql -X -v ON_ERROR_STOP=1 -v target=NEW -v restored=1 -f THIS postgres  (database properties)",
        "-- Roles that exist already are left as they are.",
        "SET client_min_messages = warning;",
        "CREATE TEMPORARY TABLE bp_created_roles (name text PRIMARY KEY);",
    ]
    for role in roles:
        name = role[1]
        statements = [_create_role(role, passwords.get(name), text)]
        statements += [f"INSERT INTO bp_created_roles VALUES ({text(sql.Literal(name))});"]
        if role[11]:
            statements.append(
                text(sql.SQL("COMMENT ON ROLE {} IS {};").format(sql.Identifier(name), sql.Literal(role[11])))
            )
        for setting in role[12] or []:
            statements.append(text(_alter_set(sql.SQL("ALTER ROLE {}").format(sql.Identifier(name)), setting)))
        condition = f"NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {text(sql.Literal(name))})"
        lines.append(_do_block(tag, condition, statements))
    for group, member, admin in connection.execute(MEMBERSHIP_SQL, (role_oids, role_oids)).fetchall():
        grant = sql.SQL("GRANT {} TO {}{};").format(
            sql.Identifier(group), sql.Identifier(member), sql.SQL(" WITH ADMIN OPTION" if admin else "")
        )
        condition = f"EXISTS (SELECT FROM bp_created_roles WHERE name = {text(sql.Literal(member))})"
        lines.append(_do_block(tag, condition, [text(grant)]))
    lines += _database_section(connection, text)
    return ("\n".join(lines) + "\n").encode()


def _passwords(connection: psycopg.Connection[Any], role_oids: list[int]) -> dict[str, str]:
    try:
        rows = connection.execute(
            "select rolname, rolpassword from pg_authid where oid = any(%s) and rolpassword is not null",
            (role_oids,),
        ).fetchall()
    except psycopg.errors.InsufficientPrivilege as error:
        raise SourceUnavailableError(
            "source.role_passwords needs a login that can read pg_authid (a superuser): " + str(error).strip()
        ) from error
    return {name: password for name, password in rows}


def _create_role(role: Any, password: str | None, text: Any) -> str:
    flags = [
        "SUPERUSER" if role[2] else "NOSUPERUSER",
        "INHERIT" if role[3] else "NOINHERIT",
        "CREATEROLE" if role[4] else "NOCREATEROLE",
        "CREATEDB" if role[5] else "NOCREATEDB",
        "LOGIN" if role[6] else "NOLOGIN",
        "REPLICATION" if role[7] else "NOREPLICATION",
        "BYPASSRLS" if role[8] else "NOBYPASSRLS",
        f"CONNECTION LIMIT {int(role[9])}",
    ]
    statement = sql.SQL("CREATE ROLE {} WITH " + " ".join(flags)).format(sql.Identifier(role[1]))
    if role[10] is not None:
        statement += sql.SQL(" VALID UNTIL {}").format(sql.Literal(role[10]))
    if password is not None:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
    return str(text(statement)) + ";"


def _do_block(tag: str, condition: str, statements: list[str]) -> str:
    body = "\n    ".join(statements)
    return f"DO {tag} BEGIN IF {condition} THEN\n    {body}\nEND IF; END {tag};"


def _alter_set(prefix: sql.Composable, setting: str) -> sql.Composable:
    """Return `<prefix> SET name TO value` for one `name=value` entry of pg_db_role_setting."""
    name, _, value = setting.partition("=")
    if name in LIST_SETTINGS:
        items = [item.strip() for item in value.split(",") if item.strip()]
        values = [
            item[1:-1].replace('""', '"') if item.startswith('"') and item.endswith('"') else item for item in items
        ]
        rendered: sql.Composable = sql.SQL(", ").join(sql.Literal(item) for item in values)
    else:
        rendered = sql.Literal(value)
    return sql.SQL("{} SET {} TO {};").format(prefix, sql.Identifier(name), rendered)


def _database_section(connection: psycopg.Connection[Any], text: Any) -> list[str]:
    row = connection.execute(DATABASE_SQL).fetchone()
    assert row is not None, "the current database is always in pg_database"
    owner, encoding, collate, ctype, provider, icu_locale, comment, settings, has_acl = row
    target = sql.SQL(':"target"')
    create: sql.Composable = sql.SQL(
        "CREATE DATABASE {} WITH TEMPLATE = template0 ENCODING = {} LC_COLLATE = {} LC_CTYPE = {}"
    ).format(target, sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype))
    if provider == "i":
        create += sql.SQL(" LOCALE_PROVIDER = icu ICU_LOCALE = {}").format(sql.Literal(icu_locale))
    create += sql.SQL(" OWNER = {};").format(sql.Identifier(owner))
    after: list[sql.Composable] = []
    if comment:
        after.append(sql.SQL("COMMENT ON DATABASE {} IS {};").format(target, sql.Literal(comment)))
    after += [_alter_set(sql.SQL("ALTER DATABASE {}").format(target), setting) for setting in settings or []]
    for role, role_settings in connection.execute(ROLE_DATABASE_SETTINGS_SQL).fetchall():
        prefix = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), target)
        after += [_alter_set(prefix, setting) for setting in role_settings]
    if has_acl:
        after.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC;").format(target))
        after.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM {};").format(target, sql.Identifier(owner)))
        for grantee, privilege, grantable in connection.execute(DATABASE_GRANTS_SQL).fetchall():
            after.append(
                sql.SQL("GRANT {} ON DATABASE {} TO {}{};").format(
                    sql.SQL(privilege), target, sql.SQL(grantee), sql.SQL(" WITH GRANT OPTION" if grantable else "")
                )
            )
    return ["\\if :{?restored}", *[text(statement) for statement in after], "\\else", text(create), "\\endif"]
