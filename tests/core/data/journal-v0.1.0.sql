-- A journal written by dispenser 0.1.0 (commit e48c82e, before the audit chain was keyed):
-- the core and daemon migrations of that version (PRAGMA user_version 2), four packs
-- loaded, three orders (one cancelled, one held), a merge round; 14 plain SHA-256 audit
-- rows. Made with sqlite3 iterdump() of that code's journal; tests load it to prove that
-- journals of that version still open and verify after the upgrade.
BEGIN TRANSACTION;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    before TEXT,
    after TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO "audit" VALUES(1,'2026-11-23T09:00:00+08:00','wang.tech','technician','pack.loading','pack:1',NULL,'{"batch":"B1","expiry":"2028-12-31","gtin":"06900000010006","order_id":null,"serial":"S000000001","shipment_id":null,"slot":0,"state":"loading"}','0000000000000000000000000000000000000000000000000000000000000000','fac1c2d8c9411d5493f567bc42fd2e1c0a3359955bf06c3fde3843981c20043d');
INSERT INTO "audit" VALUES(2,'2026-11-23T09:00:00+08:00','dispenser','system','pack.stored','pack:1','{"state":"loading"}','{"shipment_id":null,"slot":0,"state":"in_stock"}','fac1c2d8c9411d5493f567bc42fd2e1c0a3359955bf06c3fde3843981c20043d','4d990390f70d39b44cd916bbaabec77d91a9d8747ca7435359eda81f48dae46e');
INSERT INTO "audit" VALUES(3,'2026-11-23T09:00:00+08:00','wang.tech','technician','pack.loading','pack:2',NULL,'{"batch":"B1","expiry":"2028-12-31","gtin":"06900000010006","order_id":null,"serial":"S000000002","shipment_id":null,"slot":0,"state":"loading"}','4d990390f70d39b44cd916bbaabec77d91a9d8747ca7435359eda81f48dae46e','8036016b8218382d861769e7b442dd3831856b34c972d09fba29ded0465c7d52');
INSERT INTO "audit" VALUES(4,'2026-11-23T09:00:00+08:00','dispenser','system','pack.stored','pack:2','{"state":"loading"}','{"shipment_id":null,"slot":0,"state":"in_stock"}','8036016b8218382d861769e7b442dd3831856b34c972d09fba29ded0465c7d52','2f2e2f313c774fba64fc4d8affa7dbecab4c489d7a0c669b6585c9704ea6d36f');
INSERT INTO "audit" VALUES(5,'2026-11-23T09:00:00+08:00','wang.tech','technician','pack.loading','pack:3',NULL,'{"batch":"B1","expiry":"2028-12-31","gtin":"06900000010006","order_id":null,"serial":"S000000003","shipment_id":null,"slot":0,"state":"loading"}','2f2e2f313c774fba64fc4d8affa7dbecab4c489d7a0c669b6585c9704ea6d36f','db7517b23b1a839c9a8c5b2d58174447713479e3c9dc43c51b5e6db18da9ec37');
INSERT INTO "audit" VALUES(6,'2026-11-23T09:00:00+08:00','dispenser','system','pack.stored','pack:3','{"state":"loading"}','{"shipment_id":null,"slot":0,"state":"in_stock"}','db7517b23b1a839c9a8c5b2d58174447713479e3c9dc43c51b5e6db18da9ec37','c4429a30b1b7d66f90da3ed26664b4237d946025c820f365bfb79f388a9c6262');
INSERT INTO "audit" VALUES(7,'2026-11-23T09:00:00+08:00','wang.tech','technician','pack.loading','pack:4',NULL,'{"batch":"B1","expiry":"2028-12-31","gtin":"06900000010006","order_id":null,"serial":"S000000004","shipment_id":null,"slot":0,"state":"loading"}','c4429a30b1b7d66f90da3ed26664b4237d946025c820f365bfb79f388a9c6262','a021f879b3dff7e43524ed2fe183551f0668756b8e6aa2ffc9be465109d5acf2');
INSERT INTO "audit" VALUES(8,'2026-11-23T09:00:00+08:00','dispenser','system','pack.stored','pack:4','{"state":"loading"}','{"shipment_id":null,"slot":0,"state":"in_stock"}','a021f879b3dff7e43524ed2fe183551f0668756b8e6aa2ffc9be465109d5acf2','938916187ce73dad69ab24d9072d26da3b83ff8158dd110f19509b7d73ea64f9');
INSERT INTO "audit" VALUES(9,'2026-11-23T09:00:00+08:00','shop','api','order.received','LEGACY-1',NULL,'{"checks":[{"action":"hold","check":"not_eligible","holds":[],"passed":true},{"action":"hold","check":"prescription_expired","holds":[],"passed":true},{"action":"hold","check":"quantity_limit","holds":[],"passed":true},{"action":"hold","check":"duplicate_dispensing","holds":[],"passed":true},{"action":"hold","check":"duplicate_prescription","holds":[],"passed":true}],"holds":[],"items":[["06900000010006",1,30]],"patient_id":"PL1","prescription":"RX-000001","priority":"normal","shipment_id":"SH-00000001","state":"received"}','938916187ce73dad69ab24d9072d26da3b83ff8158dd110f19509b7d73ea64f9','15fcc163e974a57d00cc5ba0eb43546762444adbfe6b4ce6423741855efc04d1');
INSERT INTO "audit" VALUES(10,'2026-11-23T09:00:00+08:00','shop','api','order.received','LEGACY-2',NULL,'{"checks":[{"action":"hold","check":"not_eligible","holds":[],"passed":true},{"action":"hold","check":"prescription_expired","holds":[],"passed":true},{"action":"hold","check":"quantity_limit","holds":[],"passed":true},{"action":"hold","check":"duplicate_dispensing","holds":[],"passed":true},{"action":"hold","check":"duplicate_prescription","holds":[],"passed":true}],"holds":[],"items":[["06900000010006",2,30]],"patient_id":"PL2","prescription":"RX-000002","priority":"normal","shipment_id":"SH-00000002","state":"received"}','15fcc163e974a57d00cc5ba0eb43546762444adbfe6b4ce6423741855efc04d1','c7555623e894621c82806f6c4b64639b2b6812a556182cb03b52fcabd9e7f7ba');
INSERT INTO "audit" VALUES(11,'2026-11-23T09:00:00+08:00','shop','api','order.received','LEGACY-3',NULL,'{"checks":[{"action":"hold","check":"not_eligible","holds":[{"code":"not_eligible","detail":"no programme diagnosis (E10, E11, E12, E13, E14) on the prescription","drug_code":null}],"passed":false},{"action":"hold","check":"prescription_expired","holds":[],"passed":true},{"action":"hold","check":"quantity_limit","holds":[],"passed":true},{"action":"hold","check":"duplicate_dispensing","holds":[],"passed":true},{"action":"hold","check":"duplicate_prescription","holds":[],"passed":true}],"holds":[{"code":"not_eligible","detail":"no programme diagnosis (E10, E11, E12, E13, E14) on the prescription","drug_code":null}],"items":[["06900000010006",1,30]],"patient_id":"PL3","prescription":"RX-000003","priority":"normal","shipment_id":null,"state":"held"}','c7555623e894621c82806f6c4b64639b2b6812a556182cb03b52fcabd9e7f7ba','8d8b59fa8eb6c7e0840e82989c7b3d63c04ca9280b13c51f60ea790e6644c85d');
INSERT INTO "audit" VALUES(12,'2026-11-23T09:00:00+08:00','dispenser','system','shipment.cancelled','SH-00000001','{"state":"forming"}','{"holds":[],"orders":[],"reason":"its last order left","state":"cancelled"}','8d8b59fa8eb6c7e0840e82989c7b3d63c04ca9280b13c51f60ea790e6644c85d','c31dfa25d957d46e22c097d1ab9ced223a14e90fd5c2cbfbae81b4260dd18b5a');
INSERT INTO "audit" VALUES(13,'2026-11-23T09:00:00+08:00','shop','api','order.cancelled','LEGACY-1','{"holds":[],"state":"received"}','{"holds":[],"reason":"changed mind","state":"cancelled"}','c31dfa25d957d46e22c097d1ab9ced223a14e90fd5c2cbfbae81b4260dd18b5a','f8d1333966bf532c6783b6bf678944c155bcca566bfc5db90cc92da87d61ba3c');
INSERT INTO "audit" VALUES(14,'2026-11-23T09:06:40+08:00','dispenser','system','shipment.queued','SH-00000002','{"state":"forming"}','{"holds":[],"manual":[],"orders":["LEGACY-2"],"picks":[["LEGACY-2/06900000010006",[[0,2]]]],"short":{},"state":"queued"}','f8d1333966bf532c6783b6bf678944c155bcca566bfc5db90cc92da87d61ba3c','704f10d0917d0d0ec65081c398c459cfcda5a86fd69aa06108687a4a569a2ae4');
CREATE TABLE blocked_slots (
    slot INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE discrepancies (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    slot INTEGER NOT NULL,
    kind TEXT NOT NULL,
    expected INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    shipment_id TEXT,
    actor TEXT NOT NULL
);
CREATE TABLE faults (
    fault_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    message TEXT NOT NULL,
    context TEXT NOT NULL,
    acked_at TEXT,
    acked_by TEXT,
    acked_role TEXT,
    note TEXT
);
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    drug_code TEXT NOT NULL,
    prescription_id TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders(order_id),
    shipment_id TEXT NOT NULL REFERENCES shipments(shipment_id),
    quantity INTEGER NOT NULL,
    days_supply INTEGER NOT NULL,
    dispensed_on TEXT NOT NULL,
    supply_end TEXT NOT NULL
);
CREATE TABLE order_bodies (
    seq INTEGER PRIMARY KEY REFERENCES orders(seq),
    body TEXT NOT NULL
);
INSERT INTO "order_bodies" VALUES(1,'{"delivery":{"address":"No. 1 Anshan Road, Heping District, Tianjin","window_end":"2026-11-24T12:00:00+08:00","window_start":"2026-11-24T09:00:00+08:00"},"items":[{"days_supply":30,"drug_code":"06900000010006","quantity":1}],"order_id":"LEGACY-1","patient":{"id":"PL1","insurance_id":"120101195001011234","name":"王建国","phone":"13800000000"},"prescription":{"diagnoses":["E11.9","I10"],"id":"RX-000001","institution":"Tianjin Medical University General Hospital","issued_on":"2026-11-01","prescriber":"Dr. Li"},"priority":"normal"}');
INSERT INTO "order_bodies" VALUES(2,'{"delivery":{"address":"No. 1 Anshan Road, Heping District, Tianjin","window_end":"2026-11-24T12:00:00+08:00","window_start":"2026-11-24T09:00:00+08:00"},"items":[{"days_supply":30,"drug_code":"06900000010006","quantity":2}],"order_id":"LEGACY-2","patient":{"id":"PL2","insurance_id":"120101195001011234","name":"王建国","phone":"13800000000"},"prescription":{"diagnoses":["E11.9","I10"],"id":"RX-000002","institution":"Tianjin Medical University General Hospital","issued_on":"2026-11-01","prescriber":"Dr. Li"},"priority":"normal"}');
INSERT INTO "order_bodies" VALUES(3,'{"delivery":{"address":"No. 1 Anshan Road, Heping District, Tianjin","window_end":"2026-11-24T12:00:00+08:00","window_start":"2026-11-24T09:00:00+08:00"},"items":[{"days_supply":30,"drug_code":"06900000010006","quantity":1}],"order_id":"LEGACY-3","patient":{"id":"PL3","insurance_id":"120101195001011234","name":"王建国","phone":"13800000000"},"prescription":{"diagnoses":["I10"],"id":"RX-000003","institution":"Tianjin Medical University General Hospital","issued_on":"2026-11-01","prescriber":"Dr. Li"},"priority":"normal"}');
CREATE TABLE orders (
    seq INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    prescription_id TEXT NOT NULL,
    address_key TEXT NOT NULL,
    window_start TEXT NOT NULL,
    items TEXT NOT NULL,
    priority TEXT NOT NULL,
    received_at TEXT NOT NULL,
    state TEXT NOT NULL,
    holds TEXT NOT NULL DEFAULT '[]',
    shipment_id TEXT,
    updated_at TEXT NOT NULL
);
INSERT INTO "orders" VALUES(1,'LEGACY-1','cbef4f01cdcdd9b0db9469b4beaec7ec5bb6d11a7d6369f82696aec39aa6fcd2','PL1','RX-000001','8b0d773604efaf40ba09e45b','2026-11-24T09:00:00+08:00','06900000010006*1*30','normal','2026-11-23T09:00:00+08:00','cancelled','[]',NULL,'2026-11-23T09:00:00+08:00');
INSERT INTO "orders" VALUES(2,'LEGACY-2','fa64c58024d7c755a7399d8ca5b1fa79a96316c09c782259da421ffcdee45ddb','PL2','RX-000002','8b0d773604efaf40ba09e45b','2026-11-24T09:00:00+08:00','06900000010006*2*30','normal','2026-11-23T09:00:00+08:00','queued','[]','SH-00000002','2026-11-23T09:06:40+08:00');
INSERT INTO "orders" VALUES(3,'LEGACY-3','622b4d5f4e6268e4f68938cd3ff8030f455a1b4dd1a8afc8ff2d1b59ec0344db','PL3','RX-000003','8b0d773604efaf40ba09e45b','2026-11-24T09:00:00+08:00','06900000010006*1*30','normal','2026-11-23T09:00:00+08:00','held','[{"code":"not_eligible","detail":"no programme diagnosis (E10, E11, E12, E13, E14) on the prescription","drug_code":null}]',NULL,'2026-11-23T09:00:00+08:00');
CREATE TABLE packs (
    pack_id INTEGER PRIMARY KEY,
    gtin TEXT NOT NULL,
    batch TEXT NOT NULL,
    expiry TEXT NOT NULL,
    serial TEXT,
    slot INTEGER,
    store_seq INTEGER,
    state TEXT NOT NULL,
    shipment_id TEXT,
    order_id TEXT,
    loaded_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO "packs" VALUES(1,'06900000010006','B1','2028-12-31','S000000001',0,1,'in_stock',NULL,NULL,'2026-11-23T09:00:00+08:00','2026-11-23T09:00:00+08:00');
INSERT INTO "packs" VALUES(2,'06900000010006','B1','2028-12-31','S000000002',0,2,'in_stock',NULL,NULL,'2026-11-23T09:00:00+08:00','2026-11-23T09:00:00+08:00');
INSERT INTO "packs" VALUES(3,'06900000010006','B1','2028-12-31','S000000003',0,3,'in_stock',NULL,NULL,'2026-11-23T09:00:00+08:00','2026-11-23T09:00:00+08:00');
INSERT INTO "packs" VALUES(4,'06900000010006','B1','2028-12-31','S000000004',0,4,'in_stock',NULL,NULL,'2026-11-23T09:00:00+08:00','2026-11-23T09:00:00+08:00');
CREATE TABLE quarantined_batches (
    gtin TEXT NOT NULL,
    batch TEXT NOT NULL,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (gtin, batch)
);
CREATE TABLE robot_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applied_completion INTEGER NOT NULL
);
INSERT INTO "robot_cursor" VALUES(1,0);
CREATE TABLE robot_intents (
    seq INTEGER PRIMARY KEY,
    opcode INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    output INTEGER NOT NULL,
    count INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    shipment_id TEXT,
    pack_id INTEGER,
    state TEXT NOT NULL CHECK (state IN ('planned', 'void', 'done')),
    planned_at TEXT NOT NULL,
    completion INTEGER UNIQUE,
    result INTEGER,
    detail INTEGER,
    applied_at TEXT
);
CREATE TABLE schema_migrations (component TEXT NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (component, number));
INSERT INTO "schema_migrations" VALUES('core',1,'audit, orders, shipments, packs, history');
INSERT INTO "schema_migrations" VALUES('daemon',1,'robot intents, completion cursor, totes, faults');
CREATE TABLE shipments (
    seq INTEGER PRIMARY KEY,
    shipment_id TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    address_key TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL
);
INSERT INTO "shipments" VALUES(1,'SH-00000001','PL1','8b0d773604efaf40ba09e45b','cancelled','2026-11-23T09:00:00+08:00','2026-11-23T09:00:00+08:00','{"close_at":"2026-11-23T09:05:00+08:00","window_start":"2026-11-24T09:00:00+08:00","priority_rank":2,"arrival":1,"order_ids":[],"lines":[],"holds":[]}');
INSERT INTO "shipments" VALUES(2,'SH-00000002','PL2','8b0d773604efaf40ba09e45b','queued','2026-11-23T09:00:00+08:00','2026-11-23T09:06:40+08:00','{"close_at":"2026-11-23T09:05:00+08:00","window_start":"2026-11-24T09:00:00+08:00","priority_rank":2,"arrival":2,"order_ids":["LEGACY-2"],"lines":[["LEGACY-2","06900000010006",2,30,true,[[0,2]],[],0,0]],"holds":[]}');
CREATE TABLE totes (
    shipment_id TEXT PRIMARY KEY,
    output INTEGER NOT NULL,
    assigned_at TEXT NOT NULL,
    printed_at TEXT,
    released_at TEXT
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE INDEX orders_state ON orders(state, seq);
CREATE INDEX shipments_state ON shipments(state, seq);
CREATE INDEX packs_serial ON packs(gtin, serial);
CREATE INDEX packs_state ON packs(state);
CREATE INDEX packs_batch ON packs(gtin, batch);
CREATE INDEX history_patient_drug ON history(patient_id, drug_code);
CREATE INDEX history_prescription ON history(patient_id, prescription_id, drug_code);
CREATE INDEX robot_intents_planned ON robot_intents(state) WHERE state = 'planned';
CREATE INDEX robot_intents_shipment ON robot_intents(shipment_id);
CREATE INDEX totes_open ON totes(released_at);
COMMIT;
