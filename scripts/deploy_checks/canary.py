def run(report, d, shared, crd):
    pass
