-- Feature importances of each model version: what its LightGBM boosters split on.
--
-- A list of {"feature": name, "gain": share}, largest first, the shares (each feature's
-- part of its boosters' total split gain, averaged over the boosters) summing to 1.
-- `train` writes it with every version; a model without trees (the seasonal naive
-- fallback) and every version stored before this migration have an empty list.
ALTER TABLE models ADD COLUMN feature_importances jsonb NOT NULL DEFAULT '[]'::jsonb;
