package bridge

import (
	"fmt"
	"reflect"
	"strings"
)

// ConfigVar describes one environment variable, as read from the Config struct's tags.
type ConfigVar struct {
	Name        string
	Type        string
	Default     string
	Required    bool
	File        bool // the value is a path whose content is used
	Description string
	Section     string // the Title of the configSection it is in
}

// configSection is one section of Config (an embedded struct): a title, a one-line purpose and
// its variables, in field order.
type configSection struct {
	Title   string
	Purpose string
	Vars    []ConfigVar
}

// configSections lists Config's sections and their variables, in field order.
func configSections() []configSection {
	var out []configSection
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		if !isSection(f) {
			continue // not reachable while TestConfigFieldsDocumented passes: it fails for such a field
		}
		sec := configSection{Title: f.Tag.Get("section"), Purpose: f.Tag.Get("desc")}
		sec.Vars = sectionVars(f.Type, sec.Title, sec.Vars)
		out = append(out, sec)
	}
	return out
}

// isSection tells whether a field of Config is a section: an embedded struct with a title.
func isSection(f reflect.StructField) bool {
	_, titled := f.Tag.Lookup("section")
	return f.Anonymous && f.Type.Kind() == reflect.Struct && titled
}

// sectionVars appends the variables of one section's struct type to vars.
func sectionVars(t reflect.Type, section string, vars []ConfigVar) []ConfigVar {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("env")
		if !ok {
			continue
		}
		key, opts, _ := strings.Cut(tag, ",")
		v := ConfigVar{
			Name:        EnvPrefix + key,
			Type:        typeName(f.Type),
			Default:     f.Tag.Get("envDefault"),
			Description: f.Tag.Get("desc"),
			Section:     section,
		}
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "required":
				v.Required = true
			case "file":
				v.File = true
				v.Type = "file path"
			}
		}
		vars = append(vars, v)
	}
	return vars
}

// ConfigVars lists every variable Config reads, in field order, section after section.
func ConfigVars() []ConfigVar {
	var vars []ConfigVar
	for _, s := range configSections() {
		vars = append(vars, s.Vars...)
	}
	return vars
}

func typeName(t reflect.Type) string {
	switch t.String() {
	case "*url.URL":
		return "URL"
	case "time.Duration":
		return "duration"
	case "[]string":
		return "list"
	case "int", "int64":
		return "integer"
	}
	return t.String()
}

// configMarkdown renders the variables as the Markdown document committed as docs/configuration.md:
// one table per section, under the section's title and purpose.
func configMarkdown() string {
	var b strings.Builder
	b.WriteString("# Configuration\n\n")
	b.WriteString("<!-- Generated from the Config struct in bridge/config.go by `go test ./bridge -run TestConfigDoc -update`. Do not edit by hand. -->\n\n")
	b.WriteString("wsbridge reads environment variables only. Lists are comma-separated; durations use Go syntax (`500ms`, `10s`, `1m`); sizes are bytes. ")
	b.WriteString("Every bad value is reported at start, all at once, with the variable's name, and the process exits with status 2.\n\n")
	sections := configSections()
	b.WriteString("The variables are grouped by concern; a variable's name does not depend on its section.")
	for i, s := range sections {
		sep := ", "
		if i == 0 {
			sep = " "
		}
		// GitHub's anchor for a heading: lower case, spaces as hyphens (the titles have no
		// other punctuation).
		fmt.Fprintf(&b, "%s[%s](#%s)", sep, s.Title, strings.ReplaceAll(strings.ToLower(s.Title), " ", "-"))
	}
	b.WriteString(".\n\n")
	for _, s := range sections {
		fmt.Fprintf(&b, "## %s\n\n%s\n\n", s.Title, s.Purpose)
		b.WriteString("| Variable | Type | Default | Description |\n|---|---|---|---|\n")
		for _, v := range s.Vars {
			def := "—"
			if v.Default != "" {
				def = "`" + v.Default + "`"
			}
			if v.Required {
				def = "**required**"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, v.Type, def, strings.ReplaceAll(v.Description, "|", `\|`))
		}
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// ConfigUsage renders the variables as plain text for `wsbridge -h`, section by section.
func ConfigUsage() string {
	var b strings.Builder
	for i, s := range configSections() {
		if i > 0 {
			b.WriteByte('\n')
		}
		// The title and purpose stand at the left margin, so they read as headings over the
		// indented variables.
		for _, line := range wrap(s.Title+" — "+s.Purpose, 78) {
			fmt.Fprintf(&b, "%s\n", line)
		}
		b.WriteByte('\n')
		for _, v := range s.Vars {
			def := ""
			switch {
			case v.Required:
				def = " (required)"
			case v.Default != "":
				def = " (default " + v.Default + ")"
			}
			fmt.Fprintf(&b, "  %s  %s%s\n", v.Name, v.Type, def)
			for _, line := range wrap(v.Description, 76) {
				fmt.Fprintf(&b, "      %s\n", line)
			}
		}
	}
	return b.String()
}

func wrap(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
