-- SPDX-License-Identifier: MIT
-- Preload workload for the sqlite3 CLI, run against an on-disk database in the work dir.
-- Every query has an ORDER BY so the output never depends on the plan. The big result sets are
-- reduced to aggregates; sqlite has no hash function built in, so total() of a mixed expression
-- stands in as a checksum.
.bail on
.headers on
.mode list
PRAGMA journal_mode = DELETE;
PRAGMA cache_size = -2000;

CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT NOT NULL);
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customer(id),
                    amount INTEGER NOT NULL, note TEXT);

-- ~20k rows from recursive CTEs; the LCG keeps the values spread but deterministic.
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
INSERT INTO customer SELECT i, printf('cust-%05d', i), char(65 + i % 7) FROM c;

WITH RECURSIVE o(i, r) AS (SELECT 1, 12345 UNION ALL SELECT i + 1, (r * 16807) % 2147483647 FROM o WHERE i < 20000)
INSERT INTO orders SELECT i, 1 + r % 2000, r % 10000, CASE WHEN i % 5 = 0 THEN NULL ELSE printf('%.*c', 1 + r % 120, 'n') END FROM o;

CREATE INDEX orders_customer ON orders(customer_id, amount);
CREATE INDEX customer_region ON customer(region, name);

SELECT count(*) AS customers FROM customer;
SELECT count(*) AS orders, sum(amount) AS total, count(note) AS with_note, sum(length(note)) AS note_bytes FROM orders;

-- Join + GROUP BY + HAVING.
SELECT c.region, count(*) AS n, sum(o.amount) AS total, max(o.amount) AS biggest
  FROM orders o JOIN customer c ON c.id = o.customer_id
 GROUP BY c.region HAVING count(*) > 100 ORDER BY c.region;

-- Top customers, window function, correlated subquery.
SELECT name, spent, rank FROM (
  SELECT c.name, sum(o.amount) AS spent, rank() OVER (ORDER BY sum(o.amount) DESC, c.name) AS rank
    FROM customer c JOIN orders o ON o.customer_id = c.id GROUP BY c.id)
 WHERE rank <= 5 ORDER BY rank;
SELECT count(*) AS customers_without_orders FROM customer c
 WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id);

-- A rolled-back transaction must leave no trace.
BEGIN;
DELETE FROM orders WHERE amount < 5000;
UPDATE customer SET name = upper(name);
INSERT INTO customer VALUES (99999, 'ghost', 'Z');
SELECT count(*) AS orders_inside_tx FROM orders;
ROLLBACK;
SELECT count(*) AS orders_after_rollback, (SELECT count(*) FROM customer WHERE region = 'Z') AS ghosts FROM orders;

-- A committed transaction, then a string-heavy aggregate over everything.
BEGIN;
UPDATE orders SET note = coalesce(note, '') || '#' || id WHERE id % 3 = 0;
DELETE FROM orders WHERE id % 11 = 0;
COMMIT;
SELECT count(*) AS orders, total(amount * 7 + length(coalesce(note, '')) * 13 + id) AS checksum FROM orders;
SELECT length(group_concat(name, ',')) AS concat_len FROM (SELECT name FROM customer ORDER BY name DESC);

VACUUM;
PRAGMA integrity_check;
PRAGMA foreign_key_check;
