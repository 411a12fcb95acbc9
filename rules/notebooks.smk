rule notebook_run:
    input:
        unpack(notebook_inputs),
    output:
        notebook=f"{RES}/notebooks/{{notebook}}.ipynb",
        figures=directory(f"{FIG}/{{notebook}}"),
    log:
        f"{RES}/logs/notebook_run/{{notebook}}.log",
    benchmark:
        f"{RES}/benchmarks/notebook_run/{{notebook}}.tsv"
    params:
        results=RES,
        figures=lambda wc: f"{FIG}/{wc.notebook}",
    conda:
        "../environment.yml"
    shell:
        "python -m papermill {input.notebook:q} {output.notebook:q} --cwd . "
        "-p profile {PROFILE} -p results_dir {params.results} -p figures_dir {params.figures} "
        "> {log} 2>&1"
