rule notebook_run:
    input:
        unpack(notebook_inputs),
    output:
        notebook=f"{RES}/notebooks/{{notebook}}.ipynb",
        figures=report(directory(f"{FIG}/{{notebook}}"), patterns=["{name}.png", "{name}.html"],
                       caption="../report/figure.rst", category=lambda wc: report_category(wc.notebook),
                       subcategory="figures and tables"),
    log:
        f"{RES}/logs/notebook_run/{{notebook}}.log",
    benchmark:
        f"{RES}/benchmarks/notebook_run/{{notebook}}.tsv"
    params:
        profile=PROFILE,
        results=lambda wc, output: str(Path(output.notebook).parent.parent),
        flags=lambda wc, input: notebook_flags(input.notebook),
    conda:
        "../environment.yml"
    shell:
        "python -m papermill {input.notebook:q} {output.notebook:q} --cwd . -p profile {params.profile:q} "
        "-p results_dir {params.results:q} -p figures_dir {output.figures:q} {params.flags} > {log:q} 2>&1"
