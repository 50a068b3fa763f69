-- The tables likeness reads from digiKam's SQLite database (digikam4.db), for the tests (likeness only reads).
--
-- Taken from digiKam's own schema, core/data/database/dbconfig.xml.cmake.in (KDE/digikam), database
-- "QSQLITE", dbaction "CreateDB" and "CreateIndices": the statements for the eight tables likeness reads,
-- unchanged. The same definitions stand in the stored versions of that file from 2019 (commit 33d0457,
-- digiKam 6) and from the current master (commit 08089dd, digiKam 8). Left out: the tables likeness
-- does not read (ImageMetadata, ImageComments, Searches, ...) and the triggers.

CREATE TABLE AlbumRoots
    (id INTEGER PRIMARY KEY,
    label TEXT,
    status INTEGER NOT NULL,
    type INTEGER NOT NULL,
    identifier TEXT,
    specificPath TEXT,
    UNIQUE(identifier, specificPath));

CREATE TABLE Albums
    (id INTEGER PRIMARY KEY,
    albumRoot INTEGER NOT NULL,
    relativePath TEXT NOT NULL,
    date DATE,
    caption TEXT,
    collection TEXT,
    icon INTEGER,
    UNIQUE(albumRoot, relativePath));

CREATE TABLE Images
    (id INTEGER PRIMARY KEY,
    album INTEGER,
    name TEXT NOT NULL,
    status INTEGER NOT NULL,
    category INTEGER NOT NULL,
    modificationDate DATETIME,
    fileSize INTEGER,
    uniqueHash TEXT,
    manualOrder INTEGER,
    UNIQUE (album, name));

CREATE TABLE ImageInformation
    (imageid INTEGER PRIMARY KEY,
    rating INTEGER,
    creationDate DATETIME,
    digitizationDate DATETIME,
    orientation INTEGER,
    width INTEGER,
    height INTEGER,
    format TEXT,
    colorDepth INTEGER,
    colorModel INTEGER);

CREATE TABLE IF NOT EXISTS Tags
    (id INTEGER PRIMARY KEY,
    pid INTEGER,
    name TEXT NOT NULL,
    icon INTEGER,
    iconkde TEXT,
    UNIQUE (name, pid));

CREATE TABLE IF NOT EXISTS ImageTags
    (imageid INTEGER NOT NULL,
    tagid INTEGER NOT NULL,
    UNIQUE (imageid, tagid));

CREATE TABLE TagProperties
    (tagid INTEGER,
    property TEXT,
    value TEXT);

CREATE TABLE ImageTagProperties
    (imageid INTEGER,
    tagid INTEGER,
    property TEXT,
    value TEXT);

CREATE INDEX dir_index  ON Images (album);
CREATE INDEX hash_index ON Images (uniqueHash);
CREATE INDEX tag_index  ON ImageTags (tagid);
CREATE INDEX tag_id_index  ON ImageTags (imageid);
CREATE INDEX image_name_index ON Images (name);
CREATE INDEX creationdate_index ON ImageInformation (creationDate);
CREATE INDEX tagproperties_index ON TagProperties (tagid);
CREATE INDEX imagetagproperties_index ON ImageTagProperties (imageid, tagid);
CREATE INDEX imagetagproperties_imageid_index ON ImageTagProperties (imageid);
CREATE INDEX imagetagproperties_tagid_index ON ImageTagProperties (tagid);
