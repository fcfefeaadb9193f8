DROP TABLE caller_names;
