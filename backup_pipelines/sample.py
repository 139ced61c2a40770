"""Small sample databases for the demo and the tests: PostgreSQL (several schemas, non-ASCII text, bytea, large
objects) and MySQL/MariaDB (utf8mb4 text, blobs, a trigger, a function)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

SAMPLE_SQL = """
create schema shop;
create schema audit;
create table shop.customers (id int primary key, name text not null, country text, avatar bytea);
create table shop.orders (
    id bigint primary key, customer_id int not null references shop.customers (id),
    total numeric(12, 2) not null, note text, created_at timestamptz not null default now());
create table audit.events (id bigserial primary key, at timestamptz not null, payload jsonb not null);
create table public.settings (key text primary key, value text);
insert into shop.customers
select g, (array['Zoë Çelik', 'Søren Ødegård', '李小龙', 'Renée Müller', 'Ωmega Ltd'])[1 + g % 5] || ' #' || g,
       (array['DE', 'DK', 'CN', 'FR', 'GR'])[1 + g % 5], decode(md5(g::text), 'hex')
from generate_series(1, %(customers)s) g;
insert into shop.orders (id, customer_id, total, note)
select g, 1 + g %% %(customers)s, round((random() * 500)::numeric, 2), 'order ✓ ' || md5(g::text)
from generate_series(1, %(orders)s) g;
insert into audit.events (at, payload)
select now() - make_interval(mins => g), jsonb_build_object('event', 'login', 'n', g, 'who', 'ünïcødé')
from generate_series(1, %(events)s) g;
insert into public.settings values ('currency', '€'), ('greeting', 'こんにちは');
select lo_from_bytea(0, convert_to('a large object: ' || repeat('∑', 100), 'UTF8'));
select lo_from_bytea(0, decode(repeat('00ff', 512), 'hex'));
"""


def create_sample_database(conninfo: str, database: str, orders: int = 2000) -> None:
    """Create `database` on the server at `conninfo` (dropping any old copy) and fill it with sample data."""
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    target = psycopg.conninfo.make_conninfo(conninfo, dbname=database)
    with psycopg.connect(target, autocommit=True) as connection:
        statement = SAMPLE_SQL.replace("%(customers)s", "50").replace("%(orders)s", str(orders))
        statement = statement.replace("%(events)s", str(orders // 2)).replace("%%", "%")
        connection.execute(statement.encode())


SAMPLE_MYSQL = [
    "create table customers (id int primary key, name varchar(200) character set utf8mb4, avatar blob) engine=innodb",
    "create table orders (id bigint primary key, customer_id int not null, total decimal(12,2), note text, "
    "foreign key (customer_id) references customers (id)) engine=innodb",
    "create table audit (id bigint auto_increment primary key, what varchar(100)) engine=innodb",
    "create trigger orders_audit after insert on orders for each row insert into audit (what) values ('order')",
    "create function order_count() returns int reads sql data return (select count(*) from orders)",
]


def create_sample_mysql_database(connection: Any, database: str, orders: int = 1000) -> None:
    """Create `database` through the (autocommit) PyMySQL `connection`, dropping any old copy, and fill it."""
    with connection.cursor() as cursor:
        cursor.execute(f"drop database if exists `{database}`")
        cursor.execute(f"create database `{database}` character set utf8mb4")
        cursor.execute(f"use `{database}`")
        for statement in SAMPLE_MYSQL:
            cursor.execute(statement)
        cursor.executemany(
            "insert into customers values (%s, %s, %s)",
            [(n, f"Zoë Çelik ✓ {n}", bytes([n % 256]) * 20) for n in range(1, 51)],
        )
        cursor.executemany(
            "insert into orders values (%s, %s, %s, %s)",
            [(n, 1 + n % 50, n * 1.5, f"order {n} ☃") for n in range(1, orders + 1)],
        )
