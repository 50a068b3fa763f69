-- The tables likeness reads from Immich's PostgreSQL database, for the tests (likeness only reads).
--
-- Supported: Immich v1.137.0 and later (tables asset, asset_face, person, asset_exif). Releases before
-- it name the tables assets, asset_faces and exif; likeness refuses them with one line. This file is the
-- layout of v1.137.0 to v3.1 (asset_face.personId -> person.id); immich_v3.2_person_groups.sql, applied
-- after it, gives the layout of v3.2.0 and later (asset_face.personGroupId -> person_group.id).
--
-- Derived from the DDL in Immich's own Kysely migrations (immich-app/immich,
-- server/src/schema/migrations/), applied in order:
--   1744910873969-InitialMigration.ts            CREATE TABLE assets, person, asset_faces, exif; the enums
--   1745902563899-AddAssetVisibilityColumn.ts    assets.visibility replaces isArchived and isVisible
--   1746844028242-AddLockedVisibilityEnum.ts     visibility 'locked'
--   1752267649968-StandardizeNames.ts            assets -> asset, asset_faces -> asset_face, exif -> asset_exif
--   1753104909784-AssetFaceUpdateIdAndAuditTable.ts  asset_face.updatedAt, updateId
--   1755984055382-SidecarInAssetFile.ts          asset.sidecarPath dropped
--   1763785815996-AddAssetWidthHeight.ts         asset.width, height (displayed, EXIF orientation applied)
--   1764041175465-CreateAssetEditTable.ts        asset_edit (non-destructive edits)
--   1768336694315-CreateIsVisibleColumns.ts      asset_face.isVisible
-- Same columns and types. Left out: the tables and extensions likeness does not read (user, library,
-- face_search and its vector extension, ...), indexes and triggers. Column defaults that call Immich's
-- own functions (uuid_generate_v4 from uuid-ossp, immich_uuid_v7) use PostgreSQL's gen_random_uuid().

CREATE TYPE "assets_status_enum" AS ENUM ('active', 'trashed', 'deleted');
CREATE TYPE "sourcetype" AS ENUM ('machine-learning', 'exif', 'manual');
CREATE TYPE "asset_visibility_enum" AS ENUM ('archive', 'timeline', 'hidden', 'locked');

CREATE TABLE "asset" (
  "id" uuid NOT NULL DEFAULT gen_random_uuid(),
  "deviceAssetId" character varying NOT NULL,
  "ownerId" uuid NOT NULL,
  "deviceId" character varying NOT NULL,
  "type" character varying NOT NULL,
  "originalPath" character varying NOT NULL,
  "fileCreatedAt" timestamp with time zone NOT NULL,
  "fileModifiedAt" timestamp with time zone NOT NULL,
  "isFavorite" boolean NOT NULL DEFAULT false,
  "duration" character varying,
  "encodedVideoPath" character varying DEFAULT '',
  "checksum" bytea NOT NULL,
  "livePhotoVideoId" uuid,
  "updatedAt" timestamp with time zone NOT NULL DEFAULT now(),
  "createdAt" timestamp with time zone NOT NULL DEFAULT now(),
  "originalFileName" character varying NOT NULL,
  "thumbhash" bytea,
  "isOffline" boolean NOT NULL DEFAULT false,
  "libraryId" uuid,
  "isExternal" boolean NOT NULL DEFAULT false,
  "deletedAt" timestamp with time zone,
  "localDateTime" timestamp with time zone NOT NULL,
  "stackId" uuid,
  "duplicateId" uuid,
  "status" assets_status_enum NOT NULL DEFAULT 'active',
  "updateId" uuid NOT NULL DEFAULT gen_random_uuid(),
  "visibility" asset_visibility_enum NOT NULL DEFAULT 'timeline',
  "width" integer,
  "height" integer,
  CONSTRAINT "asset_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "person" (
  "id" uuid NOT NULL DEFAULT gen_random_uuid(),
  "createdAt" timestamp with time zone NOT NULL DEFAULT now(),
  "updatedAt" timestamp with time zone NOT NULL DEFAULT now(),
  "ownerId" uuid NOT NULL,
  "name" character varying NOT NULL DEFAULT '',
  "thumbnailPath" character varying NOT NULL DEFAULT '',
  "isHidden" boolean NOT NULL DEFAULT false,
  "birthDate" date,
  "faceAssetId" uuid,
  "isFavorite" boolean NOT NULL DEFAULT false,
  "color" character varying,
  "updateId" uuid NOT NULL DEFAULT gen_random_uuid(),
  CONSTRAINT "person_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "asset_face" (
  "assetId" uuid NOT NULL,
  "personId" uuid,
  "imageWidth" integer NOT NULL DEFAULT 0,
  "imageHeight" integer NOT NULL DEFAULT 0,
  "boundingBoxX1" integer NOT NULL DEFAULT 0,
  "boundingBoxY1" integer NOT NULL DEFAULT 0,
  "boundingBoxX2" integer NOT NULL DEFAULT 0,
  "boundingBoxY2" integer NOT NULL DEFAULT 0,
  "id" uuid NOT NULL DEFAULT gen_random_uuid(),
  "sourceType" sourcetype NOT NULL DEFAULT 'machine-learning',
  "deletedAt" timestamp with time zone,
  "updatedAt" timestamp with time zone NOT NULL DEFAULT now(),
  "updateId" uuid NOT NULL DEFAULT gen_random_uuid(),
  "isVisible" boolean NOT NULL DEFAULT TRUE,
  CONSTRAINT "asset_face_pkey" PRIMARY KEY ("id"),
  CONSTRAINT "asset_face_assetId_fkey" FOREIGN KEY ("assetId") REFERENCES "asset" ("id") ON UPDATE CASCADE ON DELETE CASCADE,
  CONSTRAINT "asset_face_personId_fkey" FOREIGN KEY ("personId") REFERENCES "person" ("id") ON UPDATE CASCADE ON DELETE SET NULL
);

CREATE TABLE "asset_exif" (
  "assetId" uuid NOT NULL,
  "make" character varying,
  "model" character varying,
  "exifImageWidth" integer,
  "exifImageHeight" integer,
  "fileSizeInByte" bigint,
  "orientation" character varying,
  "dateTimeOriginal" timestamp with time zone,
  "modifyDate" timestamp with time zone,
  "lensModel" character varying,
  "fNumber" double precision,
  "focalLength" double precision,
  "iso" integer,
  "latitude" double precision,
  "longitude" double precision,
  "city" character varying,
  "state" character varying,
  "country" character varying,
  "description" text NOT NULL DEFAULT '',
  "fps" double precision,
  "exposureTime" character varying,
  "livePhotoCID" character varying,
  "timeZone" character varying,
  "projectionType" character varying,
  "profileDescription" character varying,
  "colorspace" character varying,
  "bitsPerSample" integer,
  "autoStackId" character varying,
  "rating" integer,
  "updatedAt" timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
  "updateId" uuid NOT NULL DEFAULT gen_random_uuid(),
  CONSTRAINT "asset_exif_pkey" PRIMARY KEY ("assetId"),
  CONSTRAINT "asset_exif_assetId_fkey" FOREIGN KEY ("assetId") REFERENCES "asset" ("id") ON UPDATE CASCADE ON DELETE CASCADE
);

CREATE TABLE "asset_edit" (
  "assetId" uuid NOT NULL,
  "action" varchar NOT NULL,
  "parameters" jsonb NOT NULL,
  "index" integer NOT NULL,
  CONSTRAINT "asset_edit_pkey" PRIMARY KEY ("assetId", "index"),
  CONSTRAINT "asset_edit_assetId_fkey" FOREIGN KEY ("assetId") REFERENCES "asset" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
