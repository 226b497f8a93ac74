stage('{{title}}') {
    when {
        beforeAgent true
        beforeInput true
        branch pattern: '{{branch}}', comparator: 'EQUALS'
    }
    {{input}}
    agent {
        docker {
            image '{{image}}'
        }
    }
    environment {
        SPLITWAY_ADMIN_URL = credentials('{{admin_url_credential}}')
        SPLITWAY_TOKEN = credentials('{{token_credential}}')
    }
    options {
        timeout(time: {{stage_timeout}}, unit: 'MINUTES')
    }
    steps {
        timeout(time: {{timeout}}, unit: 'MINUTES') {
            {{steps}}
        }
    }
}
