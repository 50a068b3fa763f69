-- The tables likeness reads from digiKam's MySQL/MariaDB database, for the tests (likeness only reads).
--
-- Taken from digiKam's own schema, core/data/database/dbconfig.xml.cmake.in (KDE/digikam), database
-- "QMYSQL", dbaction "CreateDB": the statements for the eight tables likeness reads (and the foreign key
-- that ties Albums to Images), unchanged. Left out: the other tables, the TagsTree view, indexes and
-- triggers.
CREATE TABLE IF NOT EXISTS AlbumRoots
                    (id INTEGER PRIMARY KEY NOT NULL AUTO_INCREMENT,
                    label LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    status INTEGER NOT NULL,
                    type INTEGER NOT NULL,
                    identifier LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    specificPath LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    UNIQUE(identifier(127), specificPath(128)))
                    ENGINE InnoDB;
CREATE TABLE IF NOT EXISTS Albums
                    (id INTEGER PRIMARY KEY NOT NULL AUTO_INCREMENT,
                    albumRoot INTEGER NOT NULL,
                    relativePath LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci NOT NULL,
                    date DATE,
                    caption LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    collection LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    icon BIGINT,
                    CONSTRAINT Albums_AlbumRoots FOREIGN KEY (albumRoot) REFERENCES AlbumRoots (id) ON DELETE CASCADE ON UPDATE CASCADE,
                    UNIQUE(albumRoot, relativePath(255)))
                    ENGINE InnoDB;
CREATE TABLE IF NOT EXISTS Images
                    (id BIGINT PRIMARY KEY NOT NULL AUTO_INCREMENT,
                    album INTEGER,
                    name LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci NOT NULL,
                    status INTEGER NOT NULL,
                    category INTEGER NOT NULL,
                    modificationDate DATETIME,
                    fileSize BIGINT,
                    uniqueHash VARCHAR(128),
                    manualOrder BIGINT,
                    CONSTRAINT Images_Albums FOREIGN KEY (album) REFERENCES Albums (id) ON DELETE CASCADE ON UPDATE CASCADE,
                    UNIQUE (album, name(255)))
                    ENGINE InnoDB;
ALTER TABLE Albums
                    ADD CONSTRAINT Albums_Images FOREIGN KEY (icon) REFERENCES Images (id) ON DELETE SET NULL ON UPDATE CASCADE;
CREATE TABLE IF NOT EXISTS ImageInformation
                    (imageid BIGINT PRIMARY KEY,
                    rating INTEGER,
                    creationDate DATETIME,
                    digitizationDate DATETIME,
                    orientation INTEGER,
                    width INTEGER,
                    height INTEGER,
                    format LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    colorDepth INTEGER,
                    colorModel INTEGER,
                    CONSTRAINT ImageInformation_Images FOREIGN KEY (imageid) REFERENCES Images (id) ON DELETE CASCADE ON UPDATE CASCADE)
                    ENGINE InnoDB;
CREATE TABLE IF NOT EXISTS Tags
                    (id INTEGER PRIMARY KEY NOT NULL AUTO_INCREMENT,
                    pid INTEGER,
                    name LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci NOT NULL,
                    icon BIGINT,
                    iconkde LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    lft INTEGER NOT NULL,
                    rgt INTEGER NOT NULL,
                    CONSTRAINT Tags_Images FOREIGN KEY (icon) REFERENCES Images (id) ON DELETE SET NULL ON UPDATE CASCADE,
                    UNIQUE(pid, name(100)))
                    ENGINE InnoDB;
CREATE TABLE IF NOT EXISTS ImageTags
                    (imageid BIGINT NOT NULL,
                    tagid INTEGER NOT NULL,
                    CONSTRAINT ImageTags_Images FOREIGN KEY (imageid) REFERENCES Images (id) ON DELETE CASCADE ON UPDATE CASCADE,
                    CONSTRAINT ImageTags_Tags FOREIGN KEY (tagid) REFERENCES Tags (id) ON DELETE CASCADE ON UPDATE CASCADE,
                    UNIQUE (imageid, tagid))
                    ENGINE InnoDB;
CREATE TABLE IF NOT EXISTS TagProperties
                    (tagid INTEGER,
                    property TEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    value LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    CONSTRAINT TagProperties_Tags FOREIGN KEY (tagid) REFERENCES Tags (id) ON DELETE CASCADE ON UPDATE CASCADE)
                    ENGINE InnoDB;
CREATE TABLE IF NOT EXISTS ImageTagProperties
                    (imageid BIGINT,
                    tagid INTEGER,
                    property TEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    value LONGTEXT CHARACTER SET utf8 COLLATE utf8_general_ci,
                    CONSTRAINT ImageTagProperties_Images FOREIGN KEY (imageid) REFERENCES Images (id) ON DELETE CASCADE ON UPDATE CASCADE,
                    CONSTRAINT ImageTagProperties_Tags FOREIGN KEY (tagid) REFERENCES Tags (id) ON DELETE CASCADE ON UPDATE CASCADE)
                    ENGINE InnoDB;
