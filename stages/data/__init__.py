"""Build a dataset: data/<task>/<key>/{train,val,test}.parquet."""
