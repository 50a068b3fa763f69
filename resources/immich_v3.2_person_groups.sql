-- Immich v3.2.0 and later: applied on top of immich_schema.sql, for the tests (likeness only reads).
--
-- Derived from the DDL of the v3.2.0 migration that introduced face cluster groups (immich-app/immich,
-- server/src/schema/migrations/): it creates cluster_group and person_group, gives each person row a
-- personGroupId, renames asset_face.personId to personGroupId (now pointing at person_group), and
-- replaces person.id by the primary key (ownerId, personGroupId). Only the statements that shape the
-- tables likeness reads are here, in the migration's order (no data to move in a new database); left
-- out as in immich_schema.sql: the user table and its clusterGroupId, audit tables, indexes, triggers.
-- Defaults calling Immich's own functions use gen_random_uuid().

CREATE TABLE "cluster_group" (
  "id" uuid NOT NULL DEFAULT gen_random_uuid(),
  "name" character varying,
  "createdAt" timestamp with time zone NOT NULL DEFAULT now(),
  "updatedAt" timestamp with time zone NOT NULL DEFAULT now(),
  "updateId" uuid NOT NULL DEFAULT gen_random_uuid(),
  CONSTRAINT "cluster_group_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "person_group" (
  "id" uuid NOT NULL DEFAULT gen_random_uuid(),
  "clusterGroupId" uuid NOT NULL,
  "createdAt" timestamp with time zone NOT NULL DEFAULT now(),
  "createId" uuid NOT NULL DEFAULT gen_random_uuid(),
  "updatedAt" timestamp with time zone NOT NULL DEFAULT now(),
  "updateId" uuid NOT NULL DEFAULT gen_random_uuid(),
  CONSTRAINT "person_group_clusterGroupId_fkey" FOREIGN KEY ("clusterGroupId") REFERENCES "cluster_group" ("id") ON UPDATE CASCADE ON DELETE CASCADE,
  CONSTRAINT "person_group_pkey" PRIMARY KEY ("id")
);

ALTER TABLE "person" ADD "personGroupId" uuid;
ALTER TABLE "person" ALTER COLUMN "personGroupId" SET NOT NULL;
ALTER TABLE "person" ADD CONSTRAINT "person_personGroupId_fkey" FOREIGN KEY ("personGroupId") REFERENCES "person_group" ("id") ON UPDATE CASCADE ON DELETE CASCADE;

ALTER TABLE "asset_face" DROP CONSTRAINT "asset_face_personId_fkey";
ALTER TABLE "asset_face" RENAME COLUMN "personId" TO "personGroupId";
ALTER TABLE "asset_face" ADD CONSTRAINT "asset_face_personGroupId_fkey" FOREIGN KEY ("personGroupId") REFERENCES "person_group" ("id") ON UPDATE CASCADE ON DELETE SET NULL;

ALTER TABLE "person" DROP CONSTRAINT "person_pkey";
ALTER TABLE "person" DROP COLUMN "id";
ALTER TABLE "person" ADD CONSTRAINT "person_pkey" PRIMARY KEY ("ownerId", "personGroupId");
