-- fleetwire schema, version 11: what each tenant may use, and its credit. NULL means
-- unrestricted (every priority class, every network, any subcloud; no credit check), which
-- is what tenants had before; an operator narrows it with `fleetwire admin tenants policy`.

ALTER TABLE tenants
    ADD COLUMN allowed_priorities text[],   -- e.g. {normal,bulk}; NULL: all
    ADD COLUMN allowed_networks   text[],   -- e.g. {testnet}; NULL: all
    ADD COLUMN allowed_subclouds  text[],   -- subclouds it may submit to; NULL: any
    ADD COLUMN credit_limit       bigint;   -- micro-credits it may owe on mainnet; NULL: no check
